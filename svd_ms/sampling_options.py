"""User choices (sampler by short name, its parameters, guider, guidance range) -> an sgm
`sampler_config`, applied over a model config's own. Defaults stay the config's: only the
options given change it."""
import copy
import math
from typing import Dict, Mapping, Optional

from omegaconf import DictConfig, OmegaConf

from .errors import InputError

_SAMPLING = "sgm.modules.diffusionmodules.sampling."
_GUIDERS = "sgm.modules.diffusionmodules.guiders."
_DISCRETIZER = "sgm.modules.diffusionmodules.discretizer."

# short name -> (sgm class, its parameters with their checks)
_NON_NEGATIVE = "a number >= 0"
_POSITIVE_INT = "an integer >= 1"
SAMPLERS = {
    "euler": ("EulerEDMSampler", {"s_churn": _NON_NEGATIVE, "s_tmin": _NON_NEGATIVE, "s_tmax": _NON_NEGATIVE,
                                  "s_noise": _NON_NEGATIVE}),
    "heun": ("HeunEDMSampler", {"s_churn": _NON_NEGATIVE, "s_tmin": _NON_NEGATIVE, "s_tmax": _NON_NEGATIVE,
                                "s_noise": _NON_NEGATIVE}),
    "euler_ancestral": ("EulerAncestralSampler", {"eta": _NON_NEGATIVE, "s_noise": _NON_NEGATIVE}),
    "dpmpp_2s_ancestral": ("DPMPP2SAncestralSampler", {"eta": _NON_NEGATIVE, "s_noise": _NON_NEGATIVE}),
    "dpmpp_2m": ("DPMPP2MSampler", {}),
    "lms": ("LinearMultistepSampler", {"order": _POSITIVE_INT}),
    "lcm": ("ConsistencySampler", {"s_noise": _NON_NEGATIVE}),
}
GUIDERS = {
    "linear": "LinearPredictionGuider",
    "triangle": "TrianglePredictionGuider",
    "trapezoid": "TrapezoidPredictionGuider",
    "vanilla": "VanillaCFG",
    "none": "IdentityGuider",
}
# Guidance range when the config's guider has none to inherit (diffusers' SVD defaults), and
# AnimateLCM-SVD's own for the consistency sampler.
DEFAULT_GUIDANCE = (1.0, 3.0)
LCM_GUIDANCE = (1.0, 1.2)
LCM_STEPS = 4
LCM_DISCRETIZATION = {"target": _DISCRETIZER + "ConsistencyDiscretization",
                      "params": {"num_train_timesteps": 40, "sigma_min": 0.002, "sigma_max": 700.0, "rho": 7.0}}
# What the guiders that are not per-frame keep of their own parameters.
_GUIDER_KEEPS = {"TrianglePredictionGuider": ("period", "period_fusing", "additional_cond_keys"),
                 "TrapezoidPredictionGuider": ("edge_perc", "additional_cond_keys"),
                 "LinearPredictionGuider": ("additional_cond_keys",)}


def _class_name(target: Optional[str]) -> str:
    return (target or "").rsplit(".", 1)[-1]


def _short_name(target: str, table: Mapping) -> Optional[str]:
    cls = _class_name(target)
    for short, entry in table.items():
        if (entry[0] if isinstance(entry, tuple) else entry) == cls:
            return short
    return None


def _number(option: str, value, check: str):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InputError(f"{option} must be {check}, got {value!r}")
    if check == _POSITIVE_INT:
        if int(value) != value or value < 1:
            raise InputError(f"{option} must be {check}, got {value!r}")
        return int(value)
    if value < 0:
        raise InputError(f"{option} must be {check}, got {value!r}")
    return float(value)


def apply_sampling_options(sampler_config, sampler: Optional[str] = None, sampler_params: Optional[Dict] = None,
                           guider: Optional[str] = None, min_guidance_scale: Optional[float] = None,
                           max_guidance_scale: Optional[float] = None) -> Dict:
    """A new sampler_config (plain dict) with the given options applied over `sampler_config`.

    sampler: euler, euler_ancestral, heun, dpmpp_2s_ancestral, dpmpp_2m, lms, lcm; its parameters
    in `sampler_params`. guider: linear, triangle, trapezoid, vanilla (scale = max_guidance_scale),
    none. `lcm` switches to AnimateLCM-SVD's sigma grid, 4 steps and guidance 1.0 to 1.2 unless
    other steps (the pipeline's num_steps) or guidance are given.
    """
    config = copy.deepcopy(OmegaConf.to_container(sampler_config, resolve=True)
                           if isinstance(sampler_config, DictConfig) else dict(sampler_config))
    params = config.setdefault("params", {}) or {}
    config["params"] = params
    old_sampler = _short_name(config.get("target", ""), SAMPLERS)

    # ---- sampler
    if sampler is not None and sampler not in SAMPLERS:
        raise InputError(f"sampler must be one of {', '.join(SAMPLERS)}, got {sampler!r}")
    name = sampler or old_sampler
    if name is None and sampler_params:
        raise InputError(f"sampler_params need a sampler: the config's {config.get('target')!r} has no short name")
    if name is not None:
        cls, allowed = SAMPLERS[name]
        if sampler is not None and name != old_sampler:
            for key in [k for k in params if k not in ("num_steps", "discretization_config", "guider_config",
                                                         "verbose", "device")]:
                if key not in allowed:
                    del params[key]  # the previous sampler's own parameters
        for key, value in (sampler_params or {}).items():
            if key not in allowed:
                takes = ", ".join(allowed) if allowed else "no parameters"
                raise InputError(f"sampler '{name}' has no parameter '{key}' (it takes: {takes})")
            params[key] = _number(f"sampler parameter {key}", value, allowed[key])
        config["target"] = _SAMPLING + cls
        discretization = _class_name((params.get("discretization_config") or {}).get("target"))
        if name == "lcm" and old_sampler != "lcm":
            params["discretization_config"] = copy.deepcopy(LCM_DISCRETIZATION)
            params["num_steps"] = LCM_STEPS
        elif name != "lcm" and discretization in ("ConsistencyDiscretization", ""):
            sigma_max = (params.get("discretization_config") or {}).get("params", {}).get("sigma_max", 700.0)
            params["discretization_config"] = {"target": _DISCRETIZER + "EDMDiscretization",
                                               "params": {"sigma_max": sigma_max}}

    # ---- guider
    if guider is not None and guider not in GUIDERS:
        raise InputError(f"guider must be one of {', '.join(GUIDERS)}, got {guider!r}")
    for option, value in (("min_guidance_scale", min_guidance_scale), ("max_guidance_scale", max_guidance_scale)):
        if value is not None:
            _number(option, value, _NON_NEGATIVE)
    old_guider = params.get("guider_config") or {"target": _GUIDERS + "IdentityGuider"}
    old_cls = _class_name(old_guider.get("target"))
    old_params = dict(old_guider.get("params") or {})
    lcm_switch = sampler == "lcm" and old_sampler != "lcm"
    if guider is None and min_guidance_scale is None and max_guidance_scale is None and not lcm_switch:
        return config
    cls = GUIDERS[guider] if guider is not None else old_cls
    if lcm_switch and guider is None and cls not in GUIDERS.values():
        cls = "LinearPredictionGuider"
    if lcm_switch and guider is None and cls == "IdentityGuider":
        cls = "LinearPredictionGuider"  # AnimateLCM-SVD guides by default
    if cls == "IdentityGuider":
        if min_guidance_scale is not None or max_guidance_scale is not None:
            raise InputError("min_guidance_scale/max_guidance_scale have no effect with guider 'none'")
        params["guider_config"] = {"target": _GUIDERS + cls}
        return config
    if old_cls == "VanillaCFG":
        inherited = (1.0, float(old_params.get("scale", DEFAULT_GUIDANCE[1])))
    elif "max_scale" in old_params:
        inherited = (float(old_params.get("min_scale", 1.0)), float(old_params["max_scale"]))
    else:
        inherited = DEFAULT_GUIDANCE
    if lcm_switch:
        inherited = LCM_GUIDANCE
    low = inherited[0] if min_guidance_scale is None else float(min_guidance_scale)
    high = inherited[1] if max_guidance_scale is None else float(max_guidance_scale)
    if cls == "VanillaCFG":
        if min_guidance_scale is not None:
            raise InputError("min_guidance_scale has no effect with guider 'vanilla' (one scale: max_guidance_scale)")
        params["guider_config"] = {"target": _GUIDERS + cls, "params": {"scale": high}}
        return config
    new_params = {k: old_params[k] for k in _GUIDER_KEEPS.get(cls, ()) if k in old_params and cls == old_cls}
    new_params.update(min_scale=low, max_scale=high)
    if "num_frames" in old_params:
        new_params["num_frames"] = old_params["num_frames"]
    params["guider_config"] = {"target": _GUIDERS + cls, "params": new_params}
    return config
