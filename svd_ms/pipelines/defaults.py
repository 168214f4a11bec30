"""Model defaults: the one place that says how many frames and steps, which noise augmentation
and fps/motion a run of a model uses when the user leaves them unset (fps and motion default in SVDParams: 7
and 127, upstream's fps_id 6 and motion bucket).

Frames and steps come from the config's sampler (its guider's `num_frames`, its `num_steps`),
else from upstream's sampling script: 14 frames, 25 steps, cond_aug 0.02 for SVD; 21 frames,
50 steps, cond_aug 1e-5 for SV3D (svd_ms.sv3d), which the script fixes instead of reading the
config. Sampler options (e.g. `sampler='lcm'`, 4 steps) are applied before the steps are read.
"""
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

from omegaconf import OmegaConf

from .. import sv3d
from ..errors import ConfigError
from ..sampling_options import apply_sampling_options
from ..util import load_config

DEFAULT_NUM_FRAMES = 14
DEFAULT_NUM_STEPS = 25
DEFAULT_NOISE_AUG_STRENGTH = 0.02


@dataclass(frozen=True)
class ModelDefaults:
    """What a model config implies before anything is built."""
    input_keys: Tuple[str, ...]
    orbit: bool  # an SV3D orbit model: no fps/motion conditioning, its own defaults
    num_frames: int
    num_steps: int
    noise_aug_strength: float
    sampler_config: Dict[str, Any]  # the config's own, resolved to plain containers

    @classmethod
    def from_config(cls, config) -> "ModelDefaults":
        """From a config path or mapping (the whole file, with its `model:` section)."""
        return cls.from_model_config(load_config(config, require_model=True).model, config)

    @classmethod
    def from_model_config(cls, model_config, source=None) -> "ModelDefaults":
        sampler_config = model_config.params.get("sampler_config")
        if sampler_config is None:
            raise ConfigError(f"config {source!r} has no model.params.sampler_config")
        sampler = OmegaConf.to_container(sampler_config, resolve=True)
        params = sampler.get("params") or {}
        guider = (params.get("guider_config") or {}).get("params") or {}
        keys = tuple(sv3d.conditioner_input_keys(model_config))
        orbit = sv3d.is_orbit_model(keys)
        return cls(input_keys=keys, orbit=orbit,
                   num_frames=int(guider.get("num_frames") or (sv3d.NUM_FRAMES if orbit else DEFAULT_NUM_FRAMES)),
                   num_steps=int(params.get("num_steps") or (sv3d.NUM_STEPS if orbit else DEFAULT_NUM_STEPS)),
                   noise_aug_strength=sv3d.COND_AUG if orbit else DEFAULT_NOISE_AUG_STRENGTH,
                   sampler_config=sampler)

    def sampler_config_for(self, params, base: Optional[Dict] = None) -> Dict:
        """The sgm sampler_config a run of `params` uses: `base` (default: the config's) with the
        sampler and guidance options of `params` applied over it (svd_ms.sampling_options)."""
        base = self.sampler_config if base is None else base
        options = params.sampling_options()
        return apply_sampling_options(base, **options) if options else base

    def resolve(self, params, sampler_config: Optional[Dict] = None) -> Dict[str, Any]:
        """The concrete settings of a run of `params` on this model: num_frames, num_steps,
        decode_chunk_size, noise_aug_strength, fps (conditioning and playback rate) and
        motion_bucket_id (None for a model not conditioned on motion: SV3D)."""
        frames = params.num_frames or self.num_frames
        config_steps = (self.sampler_config_for(params, sampler_config).get("params") or {}).get("num_steps")
        aug = params.noise_aug_strength
        return {"num_frames": frames, "num_steps": params.num_steps or config_steps or self.num_steps,
                "decode_chunk_size": params.decode_chunk_size or frames,
                "noise_aug_strength": self.noise_aug_strength if aug is None else aug,
                "fps": params.fps, "motion_bucket_id": None if self.orbit else params.motion_bucket_id}
