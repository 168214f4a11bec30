"""Loading weights: upstream checkpoints (safetensors) and converted MindSpore .ckpt files.

The engine's parameter names are the upstream checkpoint names, so the map from an upstream key
to a parameter is explicit and nearly the identity: `map_upstream_key` lists the exceptions,
namely the OpenCLIP text-tower remnants that SVD checkpoints carry but never use.
"""
import os
import re
from typing import Dict, Optional, Tuple

import mindspore as ms
import numpy as np

from .errors import CheckpointError, CheckpointMismatchError

_TEXT_TOWER = re.compile(
    r"^conditioner\.embedders\.\d+\.open_clip\.model\."
    r"(token_embedding\.|positional_embedding$|ln_final\.|text_projection$|logit_scale$|transformer\.|attn_mask$)")


def ignored_reason(key: str) -> Optional[str]:
    if _TEXT_TOWER.match(key):
        return "OpenCLIP text tower (SVD conditions on the image tower only)"
    return None


def map_upstream_key(key: str) -> Optional[str]:
    """Upstream checkpoint key -> engine parameter name, or None for keys on the ignore list."""
    if ignored_reason(key) is not None:
        return None
    return key


def _show(names, limit=5) -> str:
    names = sorted(names)
    more = f" (+{len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def check_names(expected: Dict[str, Tuple[int, ...]], found: Dict[str, Tuple[int, ...]], source: str = "checkpoint"):
    """`expected`: engine parameter shapes; `found`: checkpoint shapes keyed by *upstream* name."""
    mapped = {}
    for key, shape in found.items():
        name = map_upstream_key(key)
        if name is not None:
            mapped[name] = tuple(shape)
    missing = set(expected) - set(mapped)
    unexpected = set(mapped) - set(expected)
    mismatched = [f"{n} {mapped[n]} vs {tuple(expected[n])}" for n in set(expected) & set(mapped)
                  if tuple(mapped[n]) != tuple(expected[n])]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing: {_show(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected: {_show(unexpected)}")
    if mismatched:
        problems.append(f"{len(mismatched)} with the wrong shape (checkpoint vs model): {_show(mismatched)}")
    if problems:
        raise CheckpointMismatchError(f"{source} does not fit the config: " + "; ".join(problems))


def is_torch_pickle(path: str) -> bool:
    return path.endswith((".pt", ".pth", ".bin")) or (path.endswith(".ckpt") and _looks_like_zip_or_pickle(path))


def _looks_like_zip_or_pickle(path: str) -> bool:
    """torch.save writes a zip archive (since torch 1.6) or a bare pickle (protocols 2 to 5)."""
    with open(path, "rb") as f:
        head = f.read(4)
    return head == b"PK\x03\x04" or (head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"))


def check_checkpoint_file(path: str) -> None:
    """Cheap checks before a model is built: the file exists, is a file, and is not a torch file
    (those go through svd_tools/convert.py first)."""
    if not os.path.exists(path):
        raise CheckpointError(f"checkpoint {path!r} does not exist")
    if os.path.isdir(path):
        raise CheckpointError(f"checkpoint {path!r} is a directory, expected a .ckpt or .safetensors file "
                              f"(a diffusers folder must first go through svd_tools/convert.py)")
    try:
        torch_file = is_torch_pickle(path) or _looks_like_zip_or_pickle(path)
    except OSError as exc:
        raise CheckpointError(f"checkpoint {path!r} cannot be read ({exc.strerror or exc})") from None
    if torch_file:
        raise CheckpointError(f"checkpoint {path!r} is a PyTorch checkpoint; convert it first with "
                              f"`python svd_tools/convert.py` (see README) and pass the .ckpt it writes")


def _safetensors_header(path: str) -> Dict:
    import json
    import struct
    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(length))
    header["__data_start__"] = 8 + length
    return header


def _read_bf16(path: str, header: Dict, key: str) -> np.ndarray:
    """numpy has no bfloat16: widen the raw 16-bit words to float32 (bf16 is fp32's top half)."""
    begin, end = header[key]["data_offsets"]
    with open(path, "rb") as f:
        f.seek(header["__data_start__"] + begin)
        raw = np.frombuffer(f.read(end - begin), dtype="<u2")
    if raw.size != int(np.prod(header[key]["shape"])):
        raise CheckpointError(f"checkpoint '{path}' is truncated at '{key}'")
    return (raw.astype(np.uint32) << 16).view(np.float32).reshape(header[key]["shape"])


def open_checkpoint(path: str):
    """Return (shapes, get_array) for a checkpoint, reading tensors one at a time where possible."""
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint '{path}' does not exist")
    if path.endswith(".safetensors"):
        from safetensors import safe_open
        try:
            handle = safe_open(path, framework="np")
            keys = list(handle.keys())
            shapes = {k: tuple(handle.get_slice(k).get_shape()) for k in keys}
        except Exception as exc:  # safetensors raises several types for corrupt files
            raise CheckpointError(f"checkpoint '{path}' is not a readable safetensors file ({exc})") from None

        header = _safetensors_header(path)

        def get_array(key):
            try:
                if header[key]["dtype"] == "BF16":
                    return _read_bf16(path, header, key)
                return handle.get_tensor(key)
            except Exception as exc:
                raise CheckpointError(f"checkpoint '{path}' is truncated or corrupt at '{key}' ({exc})") from None
        return shapes, get_array
    if is_torch_pickle(path):
        raise CheckpointError(f"checkpoint '{path}' is a PyTorch pickle; convert it first: "
                              f"python svd_tools/convert.py --pt_weights_file {path} --config CONFIG --out_dir DIR")
    try:
        params = ms.load_checkpoint(path)
    except Exception as exc:
        raise CheckpointError(f"checkpoint '{path}' is not a MindSpore checkpoint ({str(exc).splitlines()[0]})") from None
    shapes = {k: tuple(v.shape) for k, v in params.items()}
    return shapes, lambda key: params[key].asnumpy()


def build_engine(config):
    """The engine of a config (path, dict or OmegaConf). Parameters start as unallocated zeros,
    so even the full-size engine builds in seconds."""
    from omegaconf import OmegaConf
    from .util import instantiate_from_config
    if isinstance(config, str):
        config = OmegaConf.load(config)
    elif isinstance(config, dict):
        config = OmegaConf.create(config)
    return instantiate_from_config(config.model)


def engine_param_shapes(engine_or_config) -> Dict[str, Tuple[int, ...]]:
    """Names and shapes of every engine parameter, given an engine or its config."""
    engine = engine_or_config
    if not hasattr(engine, "parameters_and_names"):
        engine = build_engine(engine_or_config)
    return {name: tuple(p.shape) for name, p in engine.parameters_and_names()}


def load_checkpoint_into(engine, path: str) -> Dict[str, int]:
    """Fill every parameter of `engine` from `path`; validate names and shapes first."""
    shapes, get_array = open_checkpoint(path)
    params = dict(engine.parameters_and_names())
    check_names(engine_param_shapes(engine), shapes, source=f"checkpoint '{path}'")
    ignored = 0
    for key in shapes:
        name = map_upstream_key(key)
        if name is None:
            ignored += 1
            continue
        param = params[name]
        value = np.asarray(get_array(key))
        if value.dtype.kind != "f":
            raise CheckpointError(f"checkpoint '{path}': tensor '{key}' has non-float dtype {value.dtype}")
        param.set_data(ms.Tensor(value.astype(np.float32), param.dtype))
    return {"loaded": len(shapes) - ignored, "ignored": ignored}
