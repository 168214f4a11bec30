"""Config plumbing in the shape of sgm.util: `target:` / `params:` dictionaries become objects."""
import importlib
import os
from typing import Any, Dict, Union

from omegaconf import DictConfig, OmegaConf

from .errors import ConfigError, one_line

# Upstream-only targets that have a meaning here.
_TARGET_ALIASES = {
    "torch.nn.Identity": "svd_ms.modules.layers.Identity",
}


def resolve_target(target: str) -> str:
    """Map an upstream (`sgm.`) or local (`svd_ms.`) target path to an importable path here."""
    if target in _TARGET_ALIASES:
        return _TARGET_ALIASES[target]
    if target.startswith("sgm."):
        return "svd_ms." + target[len("sgm."):]
    return target


def get_obj_from_str(target: str) -> Any:
    path = resolve_target(target)
    module_name, _, attr = path.rpartition(".")
    try:
        module = importlib.import_module(module_name)
        return getattr(module, attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"config target '{target}' cannot be resolved ({exc})") from None


def load_config(source: Union[str, Dict, DictConfig], what: str = "config") -> DictConfig:
    """A YAML file, dict or DictConfig as a DictConfig; ConfigError names the file otherwise."""
    if isinstance(source, DictConfig):
        return source
    if isinstance(source, dict):
        return OmegaConf.create(source)
    if not os.path.isfile(source):
        raise ConfigError(f"{what} {source!r} does not exist")
    try:
        return OmegaConf.load(source)
    except Exception as exc:
        raise ConfigError(f"{what} {source!r} is not valid YAML ({one_line(exc)})") from None


def instantiate_from_config(config: Dict) -> Any:
    if "target" not in config:
        raise ConfigError(f"config entry has no 'target': {dict(config)}")
    params = config.get("params", None) or {}
    if isinstance(params, DictConfig):
        params = OmegaConf.to_container(params, resolve=True)
    return get_obj_from_str(config["target"])(**params)


def default(value, fallback):
    return fallback if value is None else value


def append_dims(x, target_ndim: int):
    """Append trailing singleton axes to a tensor until it has `target_ndim` dimensions."""
    missing = target_ndim - x.ndim
    if missing < 0:
        raise ValueError(f"input has {x.ndim} dims but target_ndim is {target_ndim}, which is less")
    return x.reshape(x.shape + (1,) * missing)
