"""UNet-only weights in the diffusers layout (e.g. AnimateLCM-SVD-xt) loaded over an engine.

The file names its tensors as diffusers' UNetSpatioTemporalConditionModel does; the project's
diffusers name map (svd_ms/diffusers_map.py) places each one in the engine. Every name and
shape is checked before the first parameter changes, so a refused file leaves the engine as it was.
"""
import os
from typing import Dict, Tuple

import mindspore as ms
import numpy as np

from .checkpoint import SafetensorsReader, is_safetensors, quote_path
from .errors import CheckpointError, CheckpointMismatchError

UNET_PREFIX = "model.diffusion_model."
_FOLDER_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors")


def resolve_unet_file(path_or_folder: str) -> str:
    """A .safetensors file, a diffusers `unet/` folder, or a pipeline folder holding `unet/`."""
    path = os.fspath(path_or_folder)
    if os.path.isdir(path):
        for folder in (os.path.join(path, "unet"), path):
            for name in _FOLDER_FILES:
                candidate = os.path.join(folder, name)
                if os.path.isfile(candidate):
                    return candidate
        raise CheckpointError(f"UNet weights folder {quote_path(path)} holds no {_FOLDER_FILES[0]} (nor in unet/)")
    if not os.path.isfile(path):
        raise CheckpointError(f"UNet weights {quote_path(path)} do not exist")
    if not is_safetensors(path):  # by content: pickled formats can run code when read
        raise CheckpointError(f"UNet weights {quote_path(path)} must be a safetensors file")
    return path


def plan_unet_weights(shapes: Dict[str, Tuple[int, ...]], engine_shapes: Dict[str, Tuple[int, ...]],
                      source: str) -> Dict[str, str]:
    """{diffusers name: engine parameter}, or a CheckpointMismatchError naming the first misfit."""
    from . import diffusers_map

    per_level, up_attn = diffusers_map.unet_layout(shapes)
    places = {}
    for key in sorted(shapes):
        name = diffusers_map.unet_name(key, per_level, up_attn)
        if name is None or UNET_PREFIX + name not in engine_shapes:
            raise CheckpointMismatchError(f"{source}: tensor '{key}' has no place in this model's UNet")
        target = UNET_PREFIX + name
        if tuple(shapes[key]) != tuple(engine_shapes[target]):
            raise CheckpointMismatchError(f"{source}: tensor '{key}' has shape {tuple(shapes[key])}, the model's "
                                          f"'{target}' is {tuple(engine_shapes[target])}")
        places[key] = target
    filled = set(places.values())
    missing = sorted(n for n in engine_shapes if n.startswith(UNET_PREFIX) and n not in filled)
    if missing:
        raise CheckpointMismatchError(f"{source}: no tensor for the UNet's '{missing[0]}' "
                                      f"({len(missing)} UNet parameters missing)")
    return places


def load_unet_weights(engine, path_or_folder: str) -> Dict[str, int]:
    """Replace every UNet parameter of `engine` by the diffusers-layout tensors of `path_or_folder`.
    Every tensor is read before the first parameter changes."""
    path = resolve_unet_file(path_or_folder)
    source = f"UNet weights {quote_path(path)}"
    with SafetensorsReader(path, label="UNet weights") as reader:
        shapes = {key: reader.info(key)[0] for key in reader.keys()}
        params = dict(engine.parameters_and_names())
        places = plan_unet_weights(shapes, {n: tuple(p.shape) for n, p in params.items()}, source)
        arrays = {}
        for key in places:
            dtype = reader.info(key)[1]
            if not dtype.startswith(("float", "bfloat")):
                raise CheckpointError(f"{source}: tensor '{key}' has non-float dtype {dtype}")
            arrays[key] = reader.read(key)
    for key, target in places.items():
        param = params[target]
        param.set_data(ms.Tensor(arrays[key].astype(np.float32), param.dtype))
    return {"loaded": len(places)}
