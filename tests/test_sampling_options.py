"""Sampling options (svd_ms/sampling_options.py): user choices applied over a config's
sampler_config; the result builds through the config contract; bad choices are one-line errors."""
import numpy as np
import pytest
from omegaconf import OmegaConf

from conftest import TINY_CONFIG
from svd_ms.errors import InputError
from svd_ms.sampling_options import apply_sampling_options
from svd_ms.util import instantiate_from_config


@pytest.fixture(scope="module")
def base():
    return OmegaConf.load(TINY_CONFIG).model.params.sampler_config


def build(config):
    return instantiate_from_config(config)


def test_no_options_keep_the_config(base):
    assert apply_sampling_options(base) == OmegaConf.to_container(base)


@pytest.mark.parametrize("name, cls", [("euler", "EulerEDMSampler"), ("heun", "HeunEDMSampler"),
                                       ("euler_ancestral", "EulerAncestralSampler"),
                                       ("dpmpp_2s_ancestral", "DPMPP2SAncestralSampler"),
                                       ("dpmpp_2m", "DPMPP2MSampler"), ("lms", "LinearMultistepSampler")])
def test_each_sampler_builds_with_the_config_guider(base, name, cls):
    config = apply_sampling_options(base, sampler=name)
    assert config["target"] == f"sgm.modules.diffusionmodules.sampling.{cls}"
    assert config["params"]["guider_config"] == OmegaConf.to_container(base.params.guider_config)
    assert config["params"]["discretization_config"]["params"] == {"sigma_max": 700.0}
    sampler = build(config)
    assert type(sampler).__name__ == cls and sampler.num_steps == 4


def test_sampler_parameters(base):
    sampler = build(apply_sampling_options(base, sampler="euler", sampler_params={"s_churn": 2, "s_tmin": 0.5}))
    assert (sampler.s_churn, sampler.s_tmin, sampler.s_noise) == (2.0, 0.5, 1.0)
    assert build(apply_sampling_options(base, sampler="lms", sampler_params={"order": 3})).order == 3
    # switching away drops the previous sampler's own parameters
    churned = apply_sampling_options(base, sampler="euler", sampler_params={"s_churn": 2})
    assert "s_churn" not in apply_sampling_options(churned, sampler="lms")["params"]
    # the same sampler keeps them
    assert apply_sampling_options(churned, sampler="euler")["params"]["s_churn"] == 2.0


@pytest.mark.parametrize("guider, expected", [("linear", [1.2, 1.65, 2.1, 2.55, 3.0]),
                                              ("triangle", [1.2, 2.1, 3.0, 2.1, 1.2]),
                                              ("trapezoid", [1.0, 1.0, 1.0, 1.0, 1.0])])  # edge_perc 0.1 of 5 frames: no edge
def test_per_frame_guiders(base, guider, expected):
    config = apply_sampling_options(base, guider=guider, min_guidance_scale=1.2, max_guidance_scale=3.0)
    assert config["params"]["guider_config"]["target"].endswith(guider.capitalize() + "PredictionGuider")
    scales = build(config).guider.frame_scales
    np.testing.assert_allclose(scales, expected, rtol=1e-6)


def test_guidance_range_alone_keeps_the_guider(base):
    config = apply_sampling_options(base, max_guidance_scale=3.5)
    params = config["params"]["guider_config"]["params"]
    assert config["params"]["guider_config"]["target"].endswith("LinearPredictionGuider")
    assert (params["min_scale"], params["max_scale"], params["num_frames"]) == (1.0, 3.5, 5)


def test_vanilla_and_none(base):
    vanilla = build(apply_sampling_options(base, guider="vanilla", max_guidance_scale=1.8)).guider
    assert type(vanilla).__name__ == "VanillaCFG" and vanilla.scale == 1.8
    assert type(build(apply_sampling_options(base, guider="none")).guider).__name__ == "IdentityGuider"


def test_lcm_defaults(base):
    """lcm brings AnimateLCM-SVD's grid, 4 steps and guidance 1.0 -> 1.2 unless told otherwise."""
    config = apply_sampling_options(base, sampler="lcm")
    sampler = build(config)
    assert type(sampler).__name__ == "ConsistencySampler" and sampler.num_steps == 4
    np.testing.assert_allclose(sampler.sigmas(4), [700.0, 128.56369, 13.678444, 0.49687842, 0.0], rtol=1e-6)
    np.testing.assert_allclose(sampler.guider.frame_scales, [1.0, 1.05, 1.1, 1.15, 1.2], rtol=1e-6)
    assert build(apply_sampling_options(base, sampler="lcm", guider="none")).guider.num_copies == 1
    back = apply_sampling_options(config, sampler="euler")
    assert back["params"]["discretization_config"]["target"].endswith("EDMDiscretization")
    with pytest.raises(InputError, match="1 to 8 steps, got 9"):
        sampler.sigmas(9)


@pytest.mark.parametrize("kwargs, message", [
    (dict(sampler="ddim"), "sampler must be one of euler, heun, euler_ancestral, dpmpp_2s_ancestral, dpmpp_2m, "
                           "lms, lcm, got 'ddim'"),
    (dict(sampler="lms", sampler_params={"eta": 1.0}), "sampler 'lms' has no parameter 'eta' (it takes: order)"),
    (dict(sampler="dpmpp_2m", sampler_params={"order": 2}), "sampler 'dpmpp_2m' has no parameter 'order' "
                                                              "(it takes: no parameters)"),
    (dict(sampler="lms", sampler_params={"order": 0}), "sampler parameter order must be an integer >= 1, got 0"),
    (dict(sampler="lms", sampler_params={"order": 2.5}), "sampler parameter order must be an integer >= 1, got 2.5"),
    (dict(sampler="euler", sampler_params={"s_churn": -1}), "sampler parameter s_churn must be a number >= 0"),
    (dict(sampler="euler", sampler_params={"s_noise": "x"}), "sampler parameter s_noise must be a number >= 0"),
    (dict(guider="cosine"), "guider must be one of linear, triangle, trapezoid, vanilla, none, got 'cosine'"),
    (dict(max_guidance_scale=float("nan")), "max_guidance_scale must be a number >= 0, got nan"),
    (dict(min_guidance_scale=-1.0), "min_guidance_scale must be a number >= 0, got -1.0"),
    (dict(guider="none", max_guidance_scale=2.0), "have no effect with guider 'none'"),
    (dict(guider="vanilla", min_guidance_scale=1.0), "min_guidance_scale has no effect with guider 'vanilla'"),
])
def test_bad_options_are_one_line_errors(base, kwargs, message):
    with pytest.raises(InputError) as info:
        apply_sampling_options(base, **kwargs)
    text = str(info.value)
    assert message in text and "\n" not in text
