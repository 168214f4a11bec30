"""What the converter writes: one Item per engine parameter, planned from the inputs before a
byte is written (an upstream single file keeps its names; a diffusers folder goes through the
project's name map, svd_ms.diffusers_map; a UNet-only file may replace the UNet)."""
import os
import re
from collections import Counter
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from svd_ms import checkpoint as ck
from svd_ms import diffusers_map
from svd_ms.errors import ConvertError
from svd_tools.sources import open_file_source

# Parameters the engine may expect that a diffusers folder cannot provide: the conditioner's
# image-latent embedder is an AutoencoderKLModeOnly that carries a (2D) decoder and a
# post_quant_conv, but only ever encodes, so they do not take part in inference.  The
# diffusers release keeps only what inference uses.
ABSENT_UNUSED = re.compile(r"^conditioner\.embedders\.\d+\.encoder\.(decoder\.|post_quant_conv\.)")


@dataclass
class Item:
    """One engine parameter of the output."""

    name: str
    shape: Tuple[int, ...]
    src_dtype: str  # numpy dtype name of the (first) source tensor, "bfloat16" included
    sources: Tuple[Tuple[object, str], ...]  # (reader, key) pairs; empty for zero-filled
    op: str = "copy"


def first_names(names, n=5) -> str:
    names = list(names)
    more = f" (+{len(names) - n} more)" if len(names) > n else ""
    return ", ".join(names[:n]) + more


_WEIGHT_FILES = {
    "unet": "diffusion_pytorch_model",
    "vae": "diffusion_pytorch_model",
    "image_encoder": "model",
}


def component_file(folder: str, component: str, prefer_fp16: bool) -> str:
    base = os.path.join(folder, component, _WEIGHT_FILES[component])
    variants = [".fp16", ""] if prefer_fp16 else ["", ".fp16"]
    candidates = []
    for ext in (".safetensors", ".safetensors.index.json", ".bin"):
        candidates += [f"{base}{variant}{ext}" for variant in variants]
    for path in candidates:
        if os.path.isfile(path):
            return path
    names = ", ".join(os.path.basename(c) for c in candidates[:2])
    raise ConvertError(f"diffusers folder {folder} has no {component} weights (looked for {component}/{{{names}, ...}})")


def _conditioner_indices(cfg) -> Tuple[int, Optional[int]]:
    """Positions of the CLIP image embedder and the VAE-latent embedder in the config."""
    clip_index, vae_index = 0, None
    try:
        models = cfg.model.params.conditioner_config.params.emb_models
        for i, entry in enumerate(models):
            target = str(entry.get("target", ""))
            if target.endswith("FrozenOpenCLIPImagePredictionEmbedder"):
                clip_index = i
            elif target.endswith("VideoPredictionEmbedderWithEncoder"):
                vae_index = i
    except Exception:  # the engine reports unusable configs on its own
        return 0, 3
    return clip_index, vae_index


def plan_single(source) -> Tuple[List[Item], Dict[str, str], Dict[str, Tuple[int, ...]]]:
    """Plan for an upstream-layout file: names are kept, the engine's ignore list applies."""
    items: List[Item] = []
    ignored: Dict[str, str] = {}
    for key in source.keys():
        shape, dtype = source.info(key)
        name = ck.map_upstream_key(key)
        if name is None:
            ignored[key] = ck.ignored_reason(key) or "not used by the engine"
            continue
        items.append(Item(name, tuple(shape), dtype, ((source, key),)))
    return items, ignored, {}


def plan_diffusers(folder, sources, cfg, expected):
    keys = {comp: src.keys() for comp, src in sources.items()}
    clip_index, vae_index = _conditioner_indices(cfg)
    rules, ignored, unknown = diffusers_map.plan(keys, clip_index, vae_index)

    def locate(prefixed):
        comp, key = prefixed.split("/", 1)
        return sources[comp], key

    items: List[Item] = []
    odd: Dict[str, Tuple[int, ...]] = {}
    for rule in rules:
        srcs = tuple(locate(s) for s in rule.sources)
        infos = [src.info(key) for src, key in srcs]
        shape = diffusers_map.output_shape(rule.op, [tuple(i[0]) for i in infos])
        if shape is None:
            raise ConvertError(
                f"{folder}: tensors {first_names(rule.sources)} cannot be combined (shapes {[i[0] for i in infos]})"
            )
        names = [(u, ck.map_upstream_key(u)) for u in rule.upstream]
        wanted = [(u, n) for u, n in names if n is not None and n in expected]
        if not wanted:  # keep one so that the mismatch report names it
            wanted = [(u, n) for u, n in names if n is not None][:1]
            if not wanted:
                ignored[rule.sources[0]] = ck.ignored_reason(rule.upstream[0]) or "not used by the engine"
                continue
        for _, name in wanted:
            items.append(Item(name, shape, infos[0][1], srcs, rule.op))
    for prefixed in unknown:
        src, key = locate(prefixed)
        odd[prefixed] = tuple(src.info(key)[0])
    return items, ignored, odd


def with_unet_from(items: List[Item], unet_file: str, expected, opened: list) -> List[Item]:
    """`items` with every UNet parameter taken from a diffusers-layout UNet-only file instead,
    checked name by name and shape by shape first (one line naming the first misfit)."""
    from svd_ms.unet_weights import UNET_PREFIX, plan_unet_weights
    unet = open_file_source(unet_file)
    opened.append(unet)
    infos = {key: unet.info(key) for key in unet.keys()}
    places = plan_unet_weights({key: tuple(shape) for key, (shape, _) in infos.items()}, expected, unet_file)
    kept = [it for it in items if not it.name.startswith(UNET_PREFIX)]
    return kept + [Item(target, tuple(infos[key][0]), infos[key][1], ((unet, key),)) for key, target in places.items()]




def zero_filled_items(items: List[Item], expected: Dict[str, Tuple[int, ...]]) -> List[Item]:
    """Zero-filled items for the parameters a diffusers folder cannot provide (ABSENT_UNUSED),
    in the float dtype most of the other items have."""
    seen = {it.name for it in items}
    floats = Counter(it.src_dtype for it in items if it.src_dtype in ("float16", "float32", "bfloat16"))
    fill_dtype = floats.most_common(1)[0][0] if floats else "float32"
    return [Item(name, tuple(shape), fill_dtype, ()) for name, shape in expected.items()
            if name not in seen and ABSENT_UNUSED.match(name)]
