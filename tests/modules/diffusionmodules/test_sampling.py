"""Every upstream sampler run of tiny_svd.samplers (sgm's samplers and guiders on the tiny model,
with every noise draw recorded) through generate() in graph mode, plus the sampler functions'
noise accounting and the no-guidance shortcut.

One pipeline serves the module: `use_sampler` swaps the sampler config between runs."""
import json
import os

import numpy as np
import pytest

from conftest import REFERENCE, assert_close
from engine_fixtures import graph_mode, tiny_pipeline

with open(os.path.join(REFERENCE, "tiny_svd.samplers.json")) as f:
    SAMPLERS = json.load(f)
RUNS = SAMPLERS["runs"]


def sampler_config(run: dict) -> dict:
    """The run's sgm sampler_config, as an upstream YAML would hold it."""
    return {
        "target": "sgm." + run["sampler"],
        "params": dict(run["sampler_params"], num_steps=run["steps"],
                       discretization_config=SAMPLERS["discretization"],
                       guider_config={"target": "sgm." + run["guider"], "params": dict(run["guider_params"])}),
    }


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline()


@pytest.fixture(scope="module")
def runs_reference():
    path = os.path.join(REFERENCE, "tiny_svd.samplers.npz")
    assert os.path.isfile(path), f"upstream reference missing: {path}"
    return dict(np.load(path))


@pytest.mark.parametrize("name", list(RUNS))
def test_upstream_run(pipe, reference, runs_reference, name):
    run = RUNS[name]
    pipe.use_sampler(sampler_config(run))
    assert pipe.num_steps == run["steps"]
    assert pipe.sampler.num_noise_draws(pipe.num_steps) == run["noise_draws"]
    latent_shape = reference["randn"].shape
    # Runs without draws get an empty array: asking for any draw would then fail.
    noise = runs_reference.get(f"{name}.noise", np.zeros((0,) + latent_shape, np.float32))
    if f"{name}.guidance_scale" in runs_reference:
        expected = runs_reference[f"{name}.guidance_scale"]
        actual = pipe.sampler.guider.frame_scales
        print(f"[exact] {name}.guidance_scale: ours {actual.tolist()} upstream {expected.tolist()}")
        assert actual.dtype == np.float32 and np.array_equal(actual, expected.astype(np.float32))
    with graph_mode():
        out = pipe.generate(reference["image"], latent_noise=reference["randn"], cond_noise=reference["cond_noise"],
                            sampler_noise=noise, output_type="latent")  # the runs store latents only
    assert_close(f"{name}.samples_z", out["latents"], runs_reference[f"{name}.samples_z"], rel=2e-4)


def test_guiders_share_the_compiled_unet_step(pipe):
    """Guiders and guidance scales change without a new UNet step to compile: one step per number
    of copies the guider batches (the guider combines them after it)."""
    steps = {}
    for name in ("euler_churn", "vanilla_cfg", "triangle", "trapezoid", "no_guidance"):
        pipe.use_sampler(sampler_config(RUNS[name]))
        step = pipe.denoiser_step
        steps.setdefault(step.num_copies, set()).add(id(step.denoise))
    assert {copies: len(ids) for copies, ids in steps.items()} == {1: 1, 2: 1}


def test_sampler_noise_shape_is_checked(pipe, reference, runs_reference):
    from svd_ms.errors import InputError
    pipe.use_sampler(sampler_config(RUNS["euler_ancestral"]))
    short = runs_reference["euler_ancestral.noise"][:3]
    with pytest.raises(InputError, match=r"sampler_noise must have shape \(4, 5, 4, 32, 48\)"):
        pipe.generate(reference["image"], latent_noise=reference["randn"], cond_noise=reference["cond_noise"],
                      sampler_noise=short)


def test_scale_one_runs_the_conditional_batch_only(pipe, reference):
    """Guidance 1 on every frame: the shortcut (UNet on the conditional batch) gives the video
    of the guided path (both batches, combined with scale 1)."""
    run = dict(RUNS["vanilla_cfg"], guider="modules.diffusionmodules.guiders.LinearPredictionGuider",
               guider_params={"min_scale": 1.0, "max_scale": 1.0, "num_frames": 5})
    outs = {}
    for skip in (True, False):
        pipe.use_sampler(sampler_config(run), skip_unused_copies=skip)
        assert pipe.guider.num_copies == (1 if skip else 2)
        with graph_mode():
            outs[skip] = pipe.generate(reference["image"], latent_noise=reference["randn"],
                                       cond_noise=reference["cond_noise"])
    assert_close("scale-1 shortcut latents vs guided path", outs[True]["latents"], outs[False]["latents"], rel=1e-5)
    assert_close("scale-1 shortcut video vs guided path", outs[True]["video"], outs[False]["video"], max_abs=1e-5)


@pytest.mark.parametrize("name", ["euler_churn", "heun", "euler_ancestral", "dpmpp_2s_ancestral", "dpmpp_2m", "lms"])
@pytest.mark.parametrize("steps", [1, 2, 5])
def test_draw_count_matches_the_function(name, steps):
    """`num_noise_draws` (what sampler_noise must hold) is what the sampling function asks for."""
    from mindspore import Tensor
    from svd_ms.util import instantiate_from_config
    sampler = instantiate_from_config(sampler_config(RUNS[name]))
    asked = []

    def noise(x):
        asked.append(1)
        return Tensor(np.zeros(tuple(x.shape), np.float32))

    sampler(lambda x, sigma: x * 0.5, Tensor(np.ones((2, 3), np.float32)), steps, noise)
    assert len(asked) == sampler.num_noise_draws(steps)
