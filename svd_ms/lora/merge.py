"""Applying LoRA files: merged into the weights once at load (inference), or loaded into the
adapters being trained; and saving the trained adapters.

Merging computes W + scale * alpha / rank * up @ down in float64 and stores it in the weight's
float32, so a sampling step afterwards costs what it costs without LoRA. Every file is read and
checked against the model before any weight changes: a bad file leaves the model untouched. A
scale of 0 skips the file after the check, so the weights stay the base weights bit for bit.
"""
import os
from typing import Dict, List, Sequence, Tuple, Union

import mindspore as ms
import numpy as np
from mindspore import Tensor

from ..errors import LoRAError
from .files import ModuleDelta, read_lora, write_lora
from .layers import LoRAAdapter, LoRASettings, set_adapter_weights
from .names import UNetNames

UNET_PREFIX = "model.diffusion_model."
LoRASpec = Union[str, Tuple[str, float]]


def parse_lora_spec(spec: str) -> Tuple[str, float]:
    """'PATH' or 'PATH:SCALE' -> (path, scale); a colon followed by something that is not a
    number stays part of the path."""
    path, sep, tail = str(spec).rpartition(":")
    if sep and path:
        try:
            return path, float(tail)
        except ValueError:
            pass
    return str(spec), 1.0


def _normalise(specs: Sequence[LoRASpec]) -> List[Tuple[str, float]]:
    if isinstance(specs, (str, os.PathLike)) or (isinstance(specs, tuple) and len(specs) == 2
                                                   and not isinstance(specs[1], (str, os.PathLike, tuple))):
        specs = [specs]  # one file
    out = []
    for spec in specs:
        path, scale = parse_lora_spec(spec) if isinstance(spec, (str, os.PathLike)) else spec
        try:
            scale = float(scale)
        except (TypeError, ValueError):
            raise LoRAError(f"LoRA '{path}': scale must be a number, got {scale!r}") from None
        if not np.isfinite(scale):
            raise LoRAError(f"LoRA '{path}': scale must be finite, got {scale}")
        out.append((str(path), scale))
    return out


def _delta_shape(delta: ModuleDelta) -> Tuple[int, ...]:
    return (delta.up.shape[0],) + tuple(delta.down.shape[1:])


def _fits(delta_shape, weight_shape) -> bool:
    """A delta fits its weight when the shapes agree up to trailing unit axes (a 1x1 conv is a linear)."""
    def core(shape):
        shape = list(shape)
        while len(shape) > 2 and shape[-1] == 1:
            shape.pop()
        return tuple(shape)
    return core(delta_shape) == core(weight_shape)


def unet_of(model):
    """The UNet of an engine, or the model itself when it is a UNet."""
    inner = getattr(getattr(model, "model", None), "diffusion_model", None)
    return inner if inner is not None else model


def merge_lora(model, specs: Sequence[LoRASpec]) -> List[Dict]:
    """Merge LoRA files into the UNet weights of `model` (an engine or its UNet), in order.

    specs: paths, 'PATH:SCALE' strings or (path, scale) pairs. Returns one record per file
    (path, scale, modules). Raises LoRAError (one line, the first mismatch) before changing
    anything if a file does not fit.
    """
    unet = unet_of(model)
    params = dict(unet.parameters_and_names())
    names = UNetNames(params)
    plans = []
    for path, scale in _normalise(specs):
        deltas = read_lora(path, names)
        for delta in deltas:
            weight = params[f"{delta.module}.weight"]
            if not _fits(_delta_shape(delta), weight.shape):
                raise LoRAError(f"LoRA file '{path}': '{delta.key}' gives a {_delta_shape(delta)} update for "
                                f"'{UNET_PREFIX}{delta.module}.weight' of shape {tuple(weight.shape)}")
        plans.append((path, scale, deltas))
    records = []
    for path, scale, deltas in plans:
        if scale != 0.0:
            for delta in deltas:
                weight = params[f"{delta.module}.weight"]
                update = delta.up.astype(np.float64) @ delta.down.reshape(delta.rank, -1).astype(np.float64)
                merged = weight.asnumpy().astype(np.float64) + (scale * delta.scaling) * update.reshape(weight.shape)
                weight.set_data(Tensor(merged.astype(np.float32), weight.dtype))
        records.append({"path": path, "scale": scale, "modules": len(deltas)})
    return records


def load_into_adapters(adapters: Dict[str, LoRAAdapter], unet, path: str) -> int:
    """Set attached adapters from a LoRA file (every module in it must have an adapter of the
    same rank). The file's alpha / rank may differ from the adapter's: `up` is rescaled so the
    adapter computes what the file means. Returns the number of modules set."""
    names = UNetNames(dict(unet.parameters_and_names()))
    deltas = read_lora(path, names)
    for delta in deltas:
        adapter = adapters.get(delta.module)
        if adapter is None:
            raise LoRAError(f"LoRA file '{path}': '{delta.key}' adapts '{delta.module}', which has no adapter here")
        want = (tuple(adapter.down.shape), tuple(adapter.up.shape))
        if (tuple(delta.down.shape), tuple(delta.up.shape)) != want:
            raise LoRAError(f"LoRA file '{path}': '{delta.key}' has down/up shapes {tuple(delta.down.shape)}/"
                            f"{tuple(delta.up.shape)}, the adapter {want[0]}/{want[1]}")
    for delta in deltas:
        adapter = adapters[delta.module]
        set_adapter_weights(adapter, delta.down, delta.up * np.float32(delta.scaling / adapter.scaling))
    return len(deltas)


def save_adapters(path: str, adapters: Dict[str, LoRAAdapter], unet, settings: LoRASettings, base_model: str,
                  values: Dict[int, object] = None):
    """Write the adapters to `path` in diffusers/PEFT naming. `values` maps id(parameter) to a
    stand-in (the EMA copy) whose value is written instead."""
    names = UNetNames(dict(unet.parameters_and_names()))
    values = values or {}
    tensors = {}
    for module, adapter in adapters.items():
        diffusers = names.to_diffusers(module)
        if diffusers is None:
            raise LoRAError(f"'{module}' has no name in diffusers' UNet layout; its adapter cannot be written")
        down, up = (values.get(id(p), p).asnumpy() for p in (adapter.down, adapter.up))
        tensors[diffusers] = (down, up)
    write_lora(path, tensors, settings.rank, settings.alpha,
               {"dropout": repr(settings.dropout), "targets": list(settings.targets), "base_model": base_model})


def check_diffusers_names(adapters: Dict[str, LoRAAdapter], unet):
    """Fail early (before training) when an adapted module has no diffusers name."""
    names = UNetNames(dict(unet.parameters_and_names()))
    for module in adapters:
        if names.to_diffusers(module) is None:
            raise LoRAError(f"'{module}' has no name in diffusers' UNet layout; its adapter could not be written")
