"""Loading a checkpoint into the engine, one tensor at a time.

The engine's parameter names are the upstream checkpoint names, so the map from an upstream key
to a parameter is explicit and nearly the identity: `map_upstream_key` lists the exceptions,
namely the OpenCLIP text-tower remnants that SVD checkpoints carry but never use. Names and
shapes are checked, and the memory the weights need is compared with what the host has
(runtime.memory's rule), before the first tensor is read.

mindspore is imported only where tensors are handed to the engine: checking names stays cheap
for the converter.
"""
import os
import re
from typing import Dict, Optional, Tuple

import numpy as np

from ..errors import CheckpointError, CheckpointMemoryError, CheckpointMismatchError, ConfigError
from .formats import quote_path
from .diffusers_folder import wants_fp16
from .readers import open_checkpoint

_TEXT_TOWER = re.compile(
    r"^conditioner\.embedders\.\d+\.open_clip\.model\."
    r"(token_embedding\.|positional_embedding$|ln_final\.|text_projection$|logit_scale$|transformer\.|attn_mask$)")


# ---------------------------------------------------------------------------------- names

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


# ---------------------------------------------------------------------------------- the engine

def build_engine(config):
    """The engine of a config (path, dict or OmegaConf). Parameters start as unallocated zeros,
    so even the full-size engine builds in seconds."""
    from ..util import instantiate_from_config, load_config
    cfg = load_config(config, require_model=True)
    try:
        return instantiate_from_config(cfg.model)
    except ConfigError as exc:
        if isinstance(config, (str, os.PathLike)):
            raise ConfigError(f"{os.fspath(config)}: {exc}") from exc
        raise


def engine_param_shapes(engine_or_config) -> Dict[str, Tuple[int, ...]]:
    """Names and shapes of every engine parameter, given an engine or its config."""
    engine = engine_or_config
    if not hasattr(engine, "parameters_and_names"):
        engine = build_engine(engine_or_config)
    return {name: tuple(p.shape) for name, p in engine.parameters_and_names()}


def load_checkpoint_into(engine, path, dtype=None) -> Dict[str, int]:
    """Fill every parameter of `engine` from `path`, one tensor at a time; names and shapes are
    validated before anything is read.

    Each tensor is converted once, straight to the dtype it is stored in: `dtype` (a MindSpore
    float type for every floating parameter, or a function of the parameter name returning one
    or None), else the parameter's own dtype. So an engine whose layers were set to float16
    before loading (O2) never holds its float16 weights in float32 first.
    Peak memory is the weights in their loaded dtype plus about one tensor."""
    import mindspore as ms

    reader = open_checkpoint(path, prefer_fp16=wants_fp16(engine, dtype))
    try:
        params = dict(engine.parameters_and_names())
        found = {key: reader.info(key)[0] for key in reader.keys()}
        check_names(engine_param_shapes(engine), found, source=f"checkpoint {quote_path(path)}")

        def target_dtype(name, param):
            chosen = dtype(name) if callable(dtype) and not isinstance(dtype, ms.Type) else dtype
            return param.dtype if chosen is None else chosen

        plan = []
        for key in reader.keys():
            name = map_upstream_key(key)
            if name is None:
                continue
            source_dtype = reader.info(key)[1]
            if source_dtype == "bool" or not source_dtype.startswith(("float", "bfloat")):
                raise CheckpointError(f"checkpoint {quote_path(path)}: tensor {key!r} has non-float dtype {source_dtype}")
            plan.append((key, name, target_dtype(name, params[name])))
        needed = sum(_nbytes(params[name].shape, want) for _, name, want in plan)
        _check_memory(path, needed)

        for key, name, want in plan:
            param = params[name]
            try:
                value = reader.read(key)
                np_dtype = {ms.float16: np.float16, ms.float64: np.float64}.get(want, np.float32)
                if value.dtype != np_dtype:
                    value = value.astype(np_dtype)
                tensor = ms.Tensor.from_numpy(np.ascontiguousarray(value))  # shares the array's memory
                if want == ms.bfloat16:
                    tensor = tensor.astype(ms.bfloat16)
                del value
                if param.dtype != want:
                    param.set_dtype(want)
                param.set_data(tensor)
            except MemoryError:
                raise _memory_error(path, needed, key) from None
            except RuntimeError as exc:  # MindSpore's allocator reports its failures this way
                if "memory" not in str(exc).lower():
                    raise
                raise _memory_error(path, needed, key) from None
        return {"loaded": len(plan), "ignored": len(found) - len(plan)}
    finally:
        reader.close()


# ---------------------------------------------------------------------------------- memory

def _nbytes(shape, ms_dtype) -> int:
    import mindspore as ms
    itemsize = 2 if ms_dtype in (ms.float16, ms.bfloat16) else 8 if ms_dtype == ms.float64 else 4
    return int(np.prod(shape, dtype=np.int64)) * itemsize


def _check_memory(path, needed: int):
    """Refuse, with the sizes, a load that cannot fit: on Linux an allocation that does not fit
    is not refused but ends in the OOM killer, with no message at all."""
    from ..runtime.memory import available_host_bytes, format_bytes  # lazily: runtime imports mindspore

    available = available_host_bytes()
    if available is not None and needed > available:
        raise CheckpointMemoryError(
            f"not enough memory to load checkpoint {quote_path(path)}: its weights need {format_bytes(needed)} in the "
            f"loaded dtype, {format_bytes(available)} is available")


def _memory_error(path, needed: int, key: str):
    from ..runtime.memory import available_host_bytes, format_bytes

    available = available_host_bytes()
    where = f", {format_bytes(available)} available now" if available is not None else ""
    return CheckpointMemoryError(f"ran out of memory loading checkpoint {quote_path(path)} at tensor {key!r}: its "
                                 f"weights need {format_bytes(needed)} in the loaded dtype{where}")
