"""One clip, the run every pipeline is made of: noise drawn from the seed, conditioning,
sampling (from pure noise, or part-way from encoded input frames), decoding, timings."""
import time
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

import numpy as np

from ..errors import InputError
from ..modules.diffusionmodules import sampling
from ..seeds import noise_generator
from .results import StepInfo, VideoResult
from .sampling import ProgressBars, sample_latents


@dataclass
class ClipNoise:
    """Noise the user fixed for one clip; what is None is drawn from the seed (the conditioning
    noise first, then the latent noise, then the sampler's own draws)."""
    latent: Optional[np.ndarray] = None
    cond: Optional[np.ndarray] = None
    sampler: Optional[np.ndarray] = None

    def given(self) -> bool:
        return any(x is not None for x in (self.latent, self.cond, self.sampler))


def _noise(image: np.ndarray, seed: int, t: int, num_steps: int, fixed: ClipNoise, sampler_set):
    """(cond_noise, latent_noise, sampler noise function) for a clip, checked against its shapes."""
    _, _, h, w = image.shape
    rng = noise_generator(seed)
    cond = rng.standard_normal(image.shape).astype(np.float32) if fixed.cond is None else fixed.cond
    latent = rng.standard_normal((t, 4, h // 8, w // 8)).astype(np.float32) if fixed.latent is None else fixed.latent
    cond, latent = np.asarray(cond, np.float32), np.asarray(latent, np.float32)
    if latent.shape != (t, 4, h // 8, w // 8):
        raise InputError(f"latent_noise must have shape {(t, 4, h // 8, w // 8)}, got {latent.shape}")
    if cond.shape != image.shape:
        raise InputError(f"cond_noise must have shape {image.shape}, got {cond.shape}")
    if fixed.sampler is None:
        return cond, latent, sampling.noise_from_rng(rng)
    draws = (sampler_set.sampler.num_noise_draws(num_steps),) + latent.shape
    sampler_noise = np.asarray(fixed.sampler, np.float32)
    if sampler_noise.shape != draws:
        raise InputError(f"sampler_noise must have shape {draws} for this sampler, got {sampler_noise.shape}")
    return cond, latent, sampling.noise_from_draws(sampler_noise)


def run_clip(parts, image: np.ndarray, seed: int, params, *, noise: Optional[ClipNoise] = None,
             progress: bool = False, callback: Optional[Callable[[StepInfo], Optional[bool]]] = None,
             output_type: str = "video", source: Optional[np.ndarray] = None, start_index: int = 0,
             clip: Tuple[int, int] = (0, 1), camera: Optional[Dict[str, np.ndarray]] = None,
             input_is_last_view: bool = False) -> VideoResult:
    """One clip from the float32 (1, 3, H, W) conditioning `image`, seeded `seed`.

    source, start_index: video-to-video: the input frames (T, 3, H, W), encoded and sampled from
        schedule index `start_index` (0: from pure noise, the input unused).
    clip: (index, count) of this clip in a chain, for the progress bars and StepInfo.clip.
    input_is_last_view: SV3D: the orbit ends where it started, the input itself is the last view.
    """
    start = time.perf_counter()
    sizes = parts.resolve(params)
    t, num_steps, chunk = sizes["num_frames"], sizes["num_steps"], sizes["decode_chunk_size"]
    parts.check_image_size(image)
    _, _, h, w = image.shape
    parts.check_memory(t, h, w, chunk, params)
    sampler_set = parts.samplers.get(t, params)
    cond_noise, latent_noise, sampler_noise = _noise(image, seed, t, num_steps, noise or ClipNoise(),
                                                     sampler_set)
    label = f"clip {clip[0] + 1}/{clip[1]} " if clip[1] > 1 else ""
    bars = ProgressBars(progress, num_steps - start_index, -(-t // chunk), label)
    try:
        def report(info: StepInfo):
            info.clip = clip[0]
            bars.update(info.stage)
            return callback(info) if callback is not None else None

        clean = parts.encode_video(source, chunk) if start_index > 0 else None
        t_encode = time.perf_counter()
        c, uc = parts.conditioning(image, cond_noise, camera, params)
        t_cond = time.perf_counter()
        z, step_times = sample_latents(sampler_set, c, uc, latent_noise, sampler_noise, num_steps, report,
                                       start_index, clean, parts.samplers.step_for_run(sampler_set, params))
        t_sample = time.perf_counter()
        result = VideoResult(latents=z.asnumpy(), seed=seed, params=params, camera=camera)
        if output_type == "video":
            result.decoded, result.video = parts.decode_latents(z, chunk, report)
            result.frames = result.decoded
            if input_is_last_view:
                result.frames = result.decoded.copy()
                result.frames[-1] = image[0]
                result.video = np.clip((result.frames + 1.0) / 2.0, 0.0, 1.0)
    finally:
        bars.close()
    end = time.perf_counter()
    steady = float(np.median(step_times[1:])) if len(step_times) > 1 else step_times[0]
    result.timings = {
        "encode_s": t_encode - start if source is not None else None,
        "conditioning_s": t_cond - t_encode,
        "compile_s": max(step_times[0] - steady, 0.0),
        "step_s": step_times,
        "start_step": start_index,
        "sampling_s": t_sample - t_cond,
        "decode_s": end - t_sample if output_type == "video" else None,
        "total_s": end - start,
    }
    return result
