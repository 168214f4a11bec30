"""A diffusers Stable Video Diffusion folder read as a checkpoint in the upstream (sgm) layout.

`DiffusersFolderReader` has the interface of every checkpoint reader (keys, info, read, close):
its keys are the upstream names the engine's parameters carry, and each tensor is made from the
folder's safetensors files through the project's name map (svd_ms.diffusers_map) at the moment
it is read. Nothing is written, and at most one tensor (three for a q/k/v merge) is held beside
the engine's weights. The names and tensors are the ones `svd_tools.convert` writes for the same
folder, so loading the folder and loading its conversion give the same weights bit for bit.

Where the diffusers format and the upstream checkpoints differ in content:
* diffusers keeps one VAE encoder; upstream holds it twice (the first stage's and the one inside
  the conditioner's image-latent embedder): both names read the same tensor;
* the conditioner's embedder is an AutoencoderKLModeOnly that carries a decoder and a
  post_quant_conv it never runs; diffusers has neither, so they read as zeros (as converted);
* the first stage of the video VAE has no quant_conv (the image-decoder VAE has both convs).

The `*.fp16.safetensors` variant is read when `prefer_fp16` and it exists, and whenever it is
the only file of a component.
"""
import os
import re
from typing import Dict, List, Optional, Tuple

import numpy as np

from .. import diffusers_map
from .formats import quote_path
from .safetensors import SafetensorsReader
from ..errors import CheckpointError, CheckpointMismatchError

WEIGHT_FILES = {"unet": "diffusion_pytorch_model", "vae": "diffusion_pytorch_model", "image_encoder": "model"}
# Positions of the image embedder and the image-latent embedder in the released models'
# conditioner (configs/svd*.yaml and the config svd_ms.diffusers_config derives).
CLIP_INDEX, VAE_INDEX = 0, 3
_COND_VAE = f"conditioner.embedders.{VAE_INDEX}.encoder."
_TEMPORAL_ONLY = re.compile(r"time_stack\.|mix_factor$|time_mix_conv\.")


def component_file(folder: str, component: str, prefer_fp16: bool = False) -> str:
    """The safetensors file of one component: the fp16 variant first when `prefer_fp16`."""
    base = os.path.join(folder, component, WEIGHT_FILES[component])
    order = [".fp16", ""] if prefer_fp16 else ["", ".fp16"]
    for variant in order:
        if os.path.isfile(f"{base}{variant}.safetensors"):
            return f"{base}{variant}.safetensors"
    others = [n for n in (f"{base}.bin", f"{base}.fp16.bin", f"{base}.safetensors.index.json") if os.path.isfile(n)]
    if others:
        raise CheckpointError(
            f"diffusers folder {quote_path(folder)} holds {component} weights as {os.path.basename(others[0])}, which "
            f"is read only by the converter: python -m svd_tools.convert --pt_weights_file {folder} ...")
    raise CheckpointError(f"diffusers folder {quote_path(folder)} is incomplete: no {component} weights (looked for "
                          f"{component}/{WEIGHT_FILES[component]}[.fp16].safetensors)")


def wants_fp16(engine, dtype=None) -> bool:
    """Whether a load into `engine` (with load_checkpoint_into's `dtype`) runs in float16: then the
    folder's fp16 variant is the one to read."""
    import mindspore as ms

    if dtype is not None and not callable(dtype):
        return dtype == ms.float16
    floats = [p.dtype for p in engine.get_parameters() if p.dtype in (ms.float16, ms.float32, ms.bfloat16)]
    return bool(floats) and sum(d == ms.float16 for d in floats) * 2 > len(floats)


class DiffusersFolderReader:
    """A diffusers folder (unet/, vae/, image_encoder/) as a checkpoint with upstream names."""

    def __init__(self, folder: str, prefer_fp16: bool = False):
        self.path = folder
        self.files = {c: component_file(folder, c, prefer_fp16) for c in diffusers_map.COMPONENTS}
        self._sources: Dict[str, SafetensorsReader] = {}
        try:
            for component, path in self.files.items():
                self._sources[component] = SafetensorsReader(path)
            self._entries = self._plan()
        except BaseException:
            self.close()
            raise

    def _plan(self) -> Dict[str, Tuple[str, List[Tuple[str, str]], Tuple[int, ...], str]]:
        """{upstream name: (op, [(component, key)], shape, dtype)}; an op of "zeros" has no sources."""
        keys = {c: s.keys() for c, s in self._sources.items()}
        rules, _, unknown = diffusers_map.plan(keys, CLIP_INDEX, VAE_INDEX)
        if unknown:
            raise CheckpointMismatchError(f"diffusers folder {quote_path(self.path)} holds {len(unknown)} tensors that "
                                          f"have no place in an SVD model: {', '.join(sorted(unknown)[:5])}")
        video_vae = "post_quant_conv.weight" not in keys["vae"]
        entries = {}
        for rule in rules:
            sources = [tuple(s.split("/", 1)) for s in rule.sources]
            infos = [self._sources[c].info(k) for c, k in sources]
            shape = diffusers_map.output_shape(rule.op, [tuple(i[0]) for i in infos])
            if shape is None:
                raise CheckpointMismatchError(f"diffusers folder {quote_path(self.path)}: tensors "
                                              f"{', '.join(rule.sources)} cannot be combined (shapes {[i[0] for i in infos]})")
            for name in rule.upstream:
                if video_vae and name.startswith("first_stage_model.quant_conv."):
                    continue  # the video VAE's first stage (AutoencodingEngine) has none
                entries[name] = (rule.op, sources, shape, infos[0][1])
        self._add_unused_decoder(entries)
        return entries

    def _add_unused_decoder(self, entries):
        """Zeros for the conditioner embedder's decoder and post_quant_conv (never run, absent
        from diffusers): the first stage's per-frame decoder layers and the latent-sized conv."""
        floats = [e[3] for e in entries.values() if e[3] in ("float16", "float32", "bfloat16")]
        fill = max(set(floats), key=floats.count) if floats else "float32"
        fill = "float32" if fill == "bfloat16" else fill
        for name, (_, _, shape, _) in list(entries.items()):
            if name.startswith("first_stage_model.decoder.") and not _TEMPORAL_ONLY.search(name):
                entries.setdefault(_COND_VAE + name[len("first_stage_model."):], ("zeros", [], shape, fill))
        quant = entries.get(_COND_VAE + "quant_conv.weight")
        if quant is not None:
            latent = quant[2][0] // 2
            entries.setdefault(_COND_VAE + "post_quant_conv.weight", ("zeros", [], (latent, latent, 1, 1), fill))
            entries.setdefault(_COND_VAE + "post_quant_conv.bias", ("zeros", [], (latent,), fill))

    def keys(self) -> List[str]:
        return list(self._entries)

    def info(self, key):
        _, _, shape, dtype = self._entries[key]
        return shape, dtype

    def read(self, key, raw_bf16: bool = False) -> np.ndarray:
        op, sources, shape, dtype = self._entries[key]
        if op == "zeros":
            return np.zeros(shape, dtype=dtype)
        arrays = [self._sources[c].read(k, raw_bf16=raw_bf16) for c, k in sources]
        value = diffusers_map.apply(op, arrays)
        if tuple(value.shape) != tuple(shape):
            raise CheckpointError(f"diffusers folder {quote_path(self.path)}: {key!r} came out as {value.shape}, "
                                  f"its header says {shape}")
        return value

    def close(self):
        for source in self._sources.values():
            source.close()
        self._sources = {}

    def variant(self) -> Optional[str]:
        """"fp16" when every component is read from its fp16 file, None when none is, "mixed" otherwise."""
        kinds = {".fp16." in os.path.basename(p) for p in self.files.values()}
        return "fp16" if kinds == {True} else None if kinds == {False} else "mixed"
