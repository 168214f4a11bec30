"""The sampling loop shared by every pipeline: the sampler and guider for a clip, the compiled
denoiser step, starting part-way along the schedule (video-to-video), step reporting."""
import copy
import json
import time
from typing import Callable, Dict, List, Optional

import mindspore as ms
import numpy as np
from mindspore import Tensor, ops
from omegaconf import OmegaConf

from ..errors import GenerationCancelled, NonFiniteError, ParamError
from ..models.diffusion import DenoiserStep, GuidedDenoiserStep
from ..modules.diffusionmodules import guiders
from ..modules.diffusionmodules.deepcache import (CachedDenoiserStep, DeepCacheSchedule, FullCachingStep,
                                                  ShallowCachedStep)
from ..util import instantiate_from_config
from .results import StepInfo


def check_finite(x, stage: str) -> None:
    if not bool(ops.isfinite(x).all()):
        raise NonFiniteError(f"non-finite values (NaN/inf) in {stage}; stopping instead of writing a broken video")


def notify(callback, info: StepInfo) -> None:
    """Hand a step to the user's callback; False from it stops the run."""
    if callback is not None and callback(info) is False:
        raise GenerationCancelled(f"stopped by the step callback during {info.stage} "
                                  f"({info.index + 1}/{info.total})")


def video_to_video_start(num_steps: int, strength: float) -> int:
    """The schedule index where video-to-video starts: the last round(strength * num_steps) steps
    (rounded down) are run; strength 1 runs them all, from pure noise."""
    steps_run = int(np.floor(strength * num_steps + 1e-6))
    if steps_run < 1:
        raise ParamError("strength", f"strength={strength} of {num_steps} steps runs no step; raise --SVD.strength "
                         f"or --SVD.num_steps")
    return num_steps - steps_run


def sample_from_step(sampler, denoise: Callable, unit_noise, num_steps: int, start_index: int, clean_latents,
                     noise: Callable, callback: Optional[Callable] = None):
    """Sample from schedule index `start_index` on: the one place that starts a sampler part-way.

    start_index 0: the sampler's own run from pure noise (exactly image-to-video). Otherwise the
    clean latents are noised to sigma = sigmas[start_index] (x = clean + sigma * noise) and the
    sampler's function runs over the rest of the schedule; every sampler takes any schedule, so
    every sampler can start part-way (churn, where configured, is sized to the shorter schedule).
    callback(i, x, denoised) counts the steps run from 0."""
    if start_index == 0:
        return sampler(denoise, unit_noise, num_steps, noise, callback)
    sigmas = sampler.sigmas(num_steps)
    x = ops.cast(clean_latents, ms.float32) + ops.cast(unit_noise, ms.float32) * float(sigmas[start_index])
    return type(sampler).sample_fn(denoise, x, sigmas[start_index:], noise, callback, **sampler.params())


class SamplerSet:
    """The sampler and guider for one sampler config and clip length (per-frame guiders are sized
    to the clip, as upstream's sampling script does), and the compiled denoiser step that runs
    them. Where every guidance scale is 1 the guider is replaced by the conditional-only one, so
    each step runs the UNet once instead of twice."""

    def __init__(self, sampler_config: Dict, num_frames: int, skip_unused_copies: bool, denoiser_step):
        config = copy.deepcopy(sampler_config)
        guider_params = ((config.get("params") or {}).get("guider_config") or {}).get("params")
        if guider_params and "max_scale" in guider_params:
            guider_params["num_frames"] = num_frames
        self.sampler = instantiate_from_config(config)
        guider = self.sampler.guider
        guider = guiders.skip_unused_copies(guider) if skip_unused_copies else guider
        self.denoiser_step = denoiser_step(guider)
        self.guider = self.denoiser_step.guider


class SamplerCache:
    """Sampler sets by (sampling options, clip length), and one compiled denoiser step per number
    of copies the guiders batch (1 or 2), built on first use and kept for the pipeline's life:
    guiders, and so guidance scales, change without recompiling the UNet."""

    def __init__(self, engine, defaults):
        self.engine, self.defaults = engine, defaults
        self.base_config = defaults.sampler_config
        self.skip_unused_copies = True
        self._sets: Dict[tuple, SamplerSet] = {}
        self._denoiser_steps: Dict[int, DenoiserStep] = {}
        self._cached_steps: Dict[tuple, tuple] = {}

    def sampler_config(self, params) -> Dict:
        return self.defaults.sampler_config_for(params, self.base_config)

    def get(self, num_frames: int, params) -> SamplerSet:
        key = (json.dumps(params.sampling_options(), sort_keys=True), num_frames)
        if key not in self._sets:
            self._sets[key] = SamplerSet(self.sampler_config(params), num_frames, self.skip_unused_copies,
                                         self._denoiser_step_for)
        return self._sets[key]

    def _denoiser_step_for(self, guider) -> GuidedDenoiserStep:
        copies = guider.num_copies
        if copies not in self._denoiser_steps:
            self._denoiser_steps[copies] = DenoiserStep(self.engine, copies)
        return GuidedDenoiserStep(self._denoiser_steps[copies], guider)

    def step_for_run(self, sampler_set: SamplerSet, params):
        """The denoiser step one sampling run calls: the set's compiled step, or with
        `params.cache == "deepcache"` a fresh DeepCache step over it (its state is one run's)."""
        if getattr(params, "cache", "none") != "deepcache":
            return sampler_set.denoiser_step
        unet = self.engine.model.diffusion_model
        if not hasattr(unet, "embed"):
            raise ParamError("cache", f"cache=deepcache is not available for {type(unet).__name__} models")
        schedule = DeepCacheSchedule(params.cache_interval, params.cache_branch)
        schedule.check(len(unet.input_blocks))
        guider = sampler_set.guider
        key = (guider.num_copies, schedule.branch)
        if key not in self._cached_steps:
            self._cached_steps[key] = (FullCachingStep(self.engine, guider.num_copies, schedule.branch),
                                       ShallowCachedStep(self.engine, guider.num_copies, schedule.branch))
        return CachedDenoiserStep(schedule, guider, *self._cached_steps[key])

    def replace_base(self, sampler_config, skip_unused_copies: bool = True) -> Optional[int]:
        """Make `sampler_config` the base of every run; returns its num_steps, if it has one."""
        config = OmegaConf.to_container(OmegaConf.create(sampler_config), resolve=True)
        self.base_config = config
        self.skip_unused_copies = skip_unused_copies
        self._sets.clear()
        return (config.get("params") or {}).get("num_steps")


def sample_latents(parts: SamplerSet, c, uc, latent_noise: np.ndarray, noise: Callable, num_steps: int,
                   callback: Optional[Callable] = None, start_index: int = 0, clean_latents=None,
                   denoiser_step=None):
    """Sampled latents and the wall time of each step run. With `start_index` > 0 only the last
    num_steps - start_index steps run, from `clean_latents` noised (video-to-video).
    `denoiser_step` stands in for the set's own (DeepCache: SamplerCache.step_for_run)."""
    denoiser_step = denoiser_step or parts.denoiser_step
    t = latent_noise.shape[0]
    cond = parts.guider.prepare_cond(c, uc)
    ioi = Tensor(np.zeros((parts.guider.num_copies, t), np.float32))
    concat, crossattn, vector = cond.get("concat"), cond.get("crossattn"), cond.get("vector")
    sigmas = parts.sampler.sigmas(num_steps)
    steps_run = num_steps - start_index
    step_times: List[float] = []
    last = [time.perf_counter()]

    def denoise(x, sigma):
        return denoiser_step(x, Tensor([sigma], ms.float32), concat, crossattn, vector, ioi, t)

    def on_step(i, x, denoised):
        check_finite(x, f"latents after sampling step {i + 1}/{steps_run}")
        now = time.perf_counter()
        step_times.append(now - last[0])
        last[0] = now
        notify(callback, StepInfo("sampling", i, steps_run, float(sigmas[start_index + i + 1]), x,
                                  denoised=denoised))

    z = sample_from_step(parts.sampler, denoise, Tensor(latent_noise), num_steps, start_index, clean_latents,
                         noise, on_step)
    return z, step_times


class ProgressBars:
    """tqdm bars over the sampling steps and the decoded chunks (nothing when disabled)."""

    def __init__(self, enabled: bool, steps: int, chunks: int, label: str = ""):
        self.bars = {}
        if enabled:
            from tqdm import tqdm
            self.bars = {"sampling": tqdm(total=steps, desc=f"{label}sampling", unit="step"),
                         "decoding": tqdm(total=chunks, desc=f"{label}decoding", unit="chunk")}

    def update(self, stage: str):
        if stage in self.bars:
            self.bars[stage].update(1)

    def close(self):
        for bar in self.bars.values():
            bar.close()
