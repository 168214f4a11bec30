"""svd_ms.pipelines.sampling: where video-to-video starts, starting a sampler part-way, step
reporting and cancelling, the non-finite guard, and the cache of samplers and compiled steps."""
import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor

from conftest import TINY_CONFIG, TINY_WEIGHTS
from svd_ms.errors import GenerationCancelled, NonFiniteError, ParamError
from svd_ms.params import SVDParams
from svd_ms.pipelines.results import StepInfo
from svd_ms.pipelines.sampling import (ProgressBars, check_finite, notify, sample_from_step, sample_latents,
                                       video_to_video_start)
from svd_ms.util import instantiate_from_config

EULER = {"target": "sgm.modules.diffusionmodules.sampling.EulerEDMSampler",
         "params": {"num_steps": 4,
                    "discretization_config": {"target": "sgm.modules.diffusionmodules.discretizer.EDMDiscretization"}}}


@pytest.mark.parametrize("strength, start", [(1.0, 0), (0.5, 2), (0.25, 3), (0.74, 2)])
def test_video_to_video_runs_the_last_strength_share_of_the_steps(strength, start):
    assert video_to_video_start(4, strength) == start


def test_a_strength_that_runs_no_step_is_refused():
    with pytest.raises(ParamError, match="runs no step") as info:
        video_to_video_start(4, 0.1)
    assert info.value.field == "strength"


def test_part_way_start_noises_the_clean_latents_to_that_sigma():
    """With a denoiser that predicts 0, an Euler step scales x by sigma_next / sigma, so starting at
    index k from clean + sigma_k * noise the first step gives (clean + sigma_k * noise) * sigma_{k+1} / sigma_k."""
    sampler = instantiate_from_config(EULER)
    sigmas = sampler.sigmas(4)
    clean = np.full((2, 4, 2, 2), 0.5, np.float32)
    unit = np.random.default_rng(0).standard_normal(clean.shape).astype(np.float32)
    seen = []
    out = sample_from_step(sampler, lambda x, sigma: x * 0, Tensor(unit), 4, 2, Tensor(clean), lambda *a: None,
                           lambda i, x, d: seen.append((i, x.asnumpy())))
    expected = (clean + float(sigmas[2]) * unit) * float(sigmas[3]) / float(sigmas[2])
    assert [i for i, _ in seen] == [0, 1]  # two steps run, counted from 0
    np.testing.assert_allclose(seen[0][1], expected, rtol=1e-4)  # float32 arithmetic
    assert np.abs(out.asnumpy()).max() < 1e-9  # the last sigma is 0
    # start 0 is the sampler's own run from pure noise, scaled to sqrt(1 + sigma_0^2).
    first = []
    sample_from_step(sampler, lambda x, sigma: x * 0, Tensor(unit), 4, 0, None, lambda *a: None,
                     lambda i, x, d: first.append(x.asnumpy()) if i == 0 else None)
    start = unit * np.sqrt(1 + np.float32(sigmas[0]) ** 2)
    np.testing.assert_allclose(first[0], start * float(sigmas[1]) / float(sigmas[0]), rtol=1e-4)


def test_a_callback_returning_false_stops_the_run():
    notify(None, StepInfo("sampling", 0, 2))
    notify(lambda info: None, StepInfo("sampling", 0, 2))
    with pytest.raises(GenerationCancelled, match="decoding \\(2/3\\)"):
        notify(lambda info: False, StepInfo("decoding", 1, 3))


def test_each_sampling_step_hands_the_callback_its_denoised_estimate():
    """A denoiser that predicts half its input: step i's denoised estimate is half the latents
    the step started from (the scaled noise for step 0, the previous step's latents after that),
    which the latents after the step are not."""
    from types import SimpleNamespace

    parts = SimpleNamespace(sampler=instantiate_from_config(EULER), denoiser_step=lambda x, *rest: x * 0.5,
                            guider=SimpleNamespace(prepare_cond=lambda c, uc: {}, num_copies=1))
    unit = np.random.default_rng(1).standard_normal((2, 4, 3, 3)).astype(np.float32)
    seen = []
    sample_latents(parts, None, None, unit, lambda *a: None, 3, seen.append)
    assert [(s.stage, s.index, s.total) for s in seen] == [("sampling", i, 3) for i in range(3)]
    started = [unit * np.sqrt(1 + np.float32(parts.sampler.sigmas(3)[0]) ** 2)] + [s.latents.asnumpy() for s in seen]
    for info, x_before in zip(seen, started):
        np.testing.assert_allclose(info.denoised.asnumpy(), 0.5 * x_before, rtol=1e-6)
    assert not np.allclose(seen[0].denoised.asnumpy(), seen[0].latents.asnumpy(), rtol=1e-2)


def test_non_finite_values_stop_the_run():
    check_finite(Tensor(np.zeros(3, np.float32)), "x")
    with pytest.raises(NonFiniteError, match="latents after step 1"):
        check_finite(Tensor(np.array([0, np.nan], np.float32)), "latents after step 1")


def test_progress_bars_are_off_when_disabled():
    bars = ProgressBars(False, 4, 2)
    bars.update("sampling")
    bars.close()
    assert bars.bars == {}


def test_the_cache_builds_one_sampler_per_clip_length_and_options_and_one_step_per_guider():
    from svd_ms.pipelines.components import PipelineComponents

    parts = PipelineComponents(SVDParams(config=TINY_CONFIG, checkpoint=TINY_WEIGHTS))
    cache = parts.samplers
    base = parts.params
    five, again = cache.get(5, base), cache.get(5, base)
    three = cache.get(3, base)
    assert five is again and three is not five
    assert three.guider.scale.asnumpy().size == 3 and five.guider.scale.asnumpy().size == 5  # sized to the clip
    vanilla = cache.get(5, base.replace(guider="vanilla", max_guidance_scale=2.0))
    assert vanilla is not five and type(vanilla.guider).__name__ == "VanillaCFG"
    unguided = cache.get(5, base.replace(guider="vanilla", max_guidance_scale=1.0))
    assert unguided.guider.num_copies == 1  # guidance 1 everywhere: the UNet runs once per step
    assert cache.replace_base(EULER) == 4 and cache.get(5, base) is not five
    assert ms.get_context("mode") == ms.PYNATIVE_MODE
