"""svd_ms.pipelines.defaults: a model's defaults, read from its config before anything is built:
the config's clip length and steps, else upstream's sampling script's (SVD 14/25/0.02, SV3D
21/50/1e-5), with sampler options applied first."""
import os

import pytest
from omegaconf import OmegaConf

from conftest import REFERENCE, TINY_CONFIG
from svd_ms.errors import ConfigError
from svd_ms.params import SVDParams
from svd_ms.pipelines.defaults import ModelDefaults

SV3D_U = os.path.join(REFERENCE, "tiny_sv3d_u.sgm.yaml")


def _without_clip_settings(path):
    cfg = OmegaConf.load(path)
    sampler = cfg.model.params.sampler_config.params
    del sampler["num_steps"]
    del sampler.guider_config.params["num_frames"]
    return OmegaConf.to_container(cfg)


def test_the_configs_own_clip_settings_come_first():
    svd = ModelDefaults.from_config(TINY_CONFIG)
    assert (svd.orbit, svd.num_frames, svd.num_steps, svd.noise_aug_strength) == (False, 5, 4, 0.02)
    orbit = ModelDefaults.from_config(SV3D_U)
    assert (orbit.orbit, orbit.num_frames, orbit.num_steps, orbit.noise_aug_strength) == (True, 6, 4, 1e-5)


def test_without_them_upstreams_script_decides():
    svd = ModelDefaults.from_config(_without_clip_settings(TINY_CONFIG))
    assert (svd.num_frames, svd.num_steps, svd.noise_aug_strength) == (14, 25, 0.02)
    orbit = ModelDefaults.from_config(_without_clip_settings(SV3D_U))
    assert (orbit.num_frames, orbit.num_steps, orbit.noise_aug_strength) == (21, 50, 1e-5)


def test_resolve_fills_what_the_user_left_unset():
    defaults = ModelDefaults.from_config(TINY_CONFIG)
    params = SVDParams(config=TINY_CONFIG)
    assert defaults.resolve(params) == {"num_frames": 5, "num_steps": 4, "decode_chunk_size": 5,
                                        "noise_aug_strength": 0.02, "fps": 7, "motion_bucket_id": 127}
    given = params.replace(num_frames=3, num_steps=2, decode_chunk_size=1, noise_aug_strength=0.0, fps=9,
                           motion_bucket_id=3)
    assert defaults.resolve(given) == {"num_frames": 3, "num_steps": 2, "decode_chunk_size": 1,
                                       "noise_aug_strength": 0.0, "fps": 9, "motion_bucket_id": 3}
    orbit = ModelDefaults.from_config(SV3D_U)
    assert orbit.resolve(SVDParams(config=SV3D_U))["motion_bucket_id"] is None  # SV3D is not conditioned on it


def test_sampler_options_are_applied_before_the_steps_are_read():
    """AnimateLCM's consistency sampler brings its own 4 steps; an explicit num_steps still wins."""
    defaults = ModelDefaults.from_config(_without_clip_settings(TINY_CONFIG))
    lcm = SVDParams(config=TINY_CONFIG, sampler="lcm")
    assert defaults.resolve(lcm)["num_steps"] == 4 and defaults.resolve(SVDParams(config=TINY_CONFIG))["num_steps"] == 25
    assert defaults.resolve(lcm.replace(num_steps=6))["num_steps"] == 6
    assert "Consistency" in defaults.sampler_config_for(lcm)["target"]


def test_a_config_without_a_sampler_is_refused():
    cfg = OmegaConf.load(TINY_CONFIG)
    del cfg.model.params["sampler_config"]
    with pytest.raises(ConfigError, match="sampler_config"):
        ModelDefaults.from_config(OmegaConf.to_container(cfg))
