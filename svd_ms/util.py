"""Config plumbing in the shape of sgm.util: `target:` / `params:` dictionaries become objects.

A config is shared like a checkpoint, so loading one must not run code: a target names a class
of this project (or one of the upstream names that map to one), checked as a string before
anything is imported. Extending the list on purpose means adding a package prefix to
ALLOWED_PACKAGES or an upstream name to TARGET_ALIASES.
"""
import importlib
import inspect
import os
import re
from typing import Any, Dict, Mapping, Optional, Union

from omegaconf import DictConfig, OmegaConf

from .errors import ConfigError, SVDError, one_line

# Packages whose classes a config may instantiate: the engine's building blocks. Functions,
# modules and anything imported into these packages from elsewhere are refused.
ALLOWED_PACKAGES = ("svd_ms.models.", "svd_ms.modules.")

# Upstream names outside `sgm.` that have a meaning here.
TARGET_ALIASES = {
    "torch.nn.Identity": "svd_ms.modules.layers.Identity",
}

# Config keys whose string value is a target, besides `target` itself.
TARGET_KEYS = ("target", "network_wrapper")

_DOTTED = re.compile(r"^[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z][A-Za-z0-9_]*)+$")


def resolve_target(target: str) -> str:
    """Map an upstream (`sgm.`) or local (`svd_ms.`) target path to an importable path here."""
    if target in TARGET_ALIASES:
        return TARGET_ALIASES[target]
    if target.startswith("sgm."):
        return "svd_ms." + target[len("sgm."):]
    return target


def _where(source: Optional[str]) -> str:
    return f" in {source!r}" if source else ""


def check_target(target, source: Optional[str] = None) -> str:
    """The importable path of an allowed target; ConfigError, before any import, otherwise."""
    if not isinstance(target, str):
        raise ConfigError(f"config target {target!r}{_where(source)} is not a dotted class name")
    path = resolve_target(target)
    if not _DOTTED.match(path) or not path.startswith(ALLOWED_PACKAGES):
        raise ConfigError(
            f"config target {target!r}{_where(source)} is not allowed: targets must be classes under "
            f"{', '.join(p.rstrip('.') for p in ALLOWED_PACKAGES)} (or sgm.* names of them, or "
            f"{', '.join(sorted(TARGET_ALIASES))})")
    return path


def check_targets(config, source: Optional[str] = None) -> None:
    """Check every target named anywhere in a config tree (see TARGET_KEYS): allowed by name,
    then resolved to a class of this project (only this project's modules are imported)."""
    if isinstance(config, DictConfig):
        config = OmegaConf.to_container(config, resolve=False)
    if isinstance(config, Mapping):
        for key, value in config.items():
            if key in TARGET_KEYS and value is not None and not isinstance(value, (Mapping, list)):
                get_obj_from_str(value, source)  # the name is checked before anything is imported
            else:
                check_targets(value, source)
    elif isinstance(config, (list, tuple)):
        for value in config:
            check_targets(value, source)


def get_obj_from_str(target: str, source: Optional[str] = None) -> Any:
    path = check_target(target, source)
    module_name, _, attr = path.rpartition(".")
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"config target {target!r}{_where(source)} cannot be resolved ({exc})") from None
    # A name imported into an allowed module from elsewhere (a function, numpy, os) is not ours.
    if not (inspect.isclass(obj) and obj.__module__.startswith(ALLOWED_PACKAGES)):
        raise ConfigError(f"config target {target!r}{_where(source)} is not allowed: it is not a class "
                          f"defined under {', '.join(p.rstrip('.') for p in ALLOWED_PACKAGES)}")
    return obj


def instantiate_from_config(config: Dict) -> Any:
    if "target" not in config:
        raise ConfigError(f"config entry has no 'target': {dict(config)}")
    params = config.get("params", None) or {}
    if isinstance(params, DictConfig):
        params = OmegaConf.to_container(params, resolve=True)
    target = config["target"]
    cls = get_obj_from_str(target)
    try:
        return cls(**params)
    except (SVDError, MemoryError):
        raise
    except Exception as exc:
        # A parameter the class does not take, or a value it cannot use: named at the innermost
        # entry, which outer entries pass on as it is (ConfigError is an SVDError).
        raise ConfigError(f"{target.rsplit('.', 1)[-1]} cannot be built from its params ({one_line(exc)})") from exc


def load_config(source: Union[str, os.PathLike, Mapping, DictConfig], what: str = "model config",
                require_model: bool = False) -> DictConfig:
    """A config from a YAML path, a dict or a DictConfig, with every target checked against the
    allow-list. Every refusal is one ConfigError naming the file (`what` says which config)."""
    name = None
    if isinstance(source, DictConfig):
        cfg = source
    elif isinstance(source, Mapping):
        try:
            cfg = OmegaConf.create(dict(source))
        except Exception as exc:
            raise ConfigError(f"{what} is not a valid config ({_first_line(exc)})") from None
    elif isinstance(source, (str, os.PathLike)):
        name = os.fspath(source)
        cfg = _read_yaml(name, what)
    else:
        raise ConfigError(f"{what} must be a YAML path or a mapping, got {type(source).__name__}")
    if require_model and "model" not in cfg:
        where = f" {name!r}" if name else ""
        raise ConfigError(f"{what}{where} has no `model:` section (is it a model config?)")
    check_targets(cfg, name)
    return cfg


def _read_yaml(path: str, what: str) -> DictConfig:
    if not os.path.exists(path):
        raise ConfigError(f"{what} {path!r} does not exist")
    if not os.path.isfile(path):
        raise ConfigError(f"{what} {path!r} is not a regular file")
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise ConfigError(f"{what} {path!r} cannot be read ({exc.strerror or exc})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is None or "\0" in text:
        raise ConfigError(f"{what} {path!r} is not a text file (expected YAML)")
    try:
        cfg = OmegaConf.create(text)
    except Exception as exc:  # yaml and omegaconf raise several types
        raise ConfigError(f"{what} {path!r} is not valid YAML ({_first_line(exc)})") from None
    if not isinstance(cfg, DictConfig):
        raise ConfigError(f"{what} {path!r} is not a mapping of settings (found a list)")
    return cfg


def _first_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return "; ".join(lines[:3])[:200] if lines else type(exc).__name__


def default(value, fallback):
    return fallback if value is None else value


def append_dims(x, target_ndim: int):
    """Append trailing singleton axes to a tensor until it has `target_ndim` dimensions."""
    missing = target_ndim - x.ndim
    if missing < 0:
        raise ValueError(f"input has {x.ndim} dims but target_ndim is {target_ndim}, which is less")
    return x.reshape(x.shape + (1,) * missing)
