"""Chained clips: one long video made clip after clip, clip k+1 conditioned on the last frame of
clip k. Finished clips stay on the host, and a chain resumes from those handed back."""
import time
from typing import Callable, List, Optional, Sequence

import numpy as np

from ..errors import InputError
from ..seeds import clip_seed, resolve_seed
from .clip import run_clip
from .components import TypedPipeline
from .results import ClipResult, StepInfo, VideoResult


def chain_condition(frames: np.ndarray) -> np.ndarray:
    """The conditioning image of the next clip: the last decoded frame as float, clamped to the
    image range [-1, 1] (the video's last frame before 8-bit rounding)."""
    return np.clip(np.asarray(frames[-1:], np.float32), -1.0, 1.0)


def check_finished_clips(clips: List[ClipResult], seed: int, num_clips: int, image: np.ndarray,
                         num_frames: int) -> List[ClipResult]:
    """Finished clips handed back to resume a chain must be this chain's clips 0..m-1."""
    if len(clips) > num_clips:
        raise InputError(f"{len(clips)} finished clips for a chain of num_clips={num_clips}")
    shape = (num_frames, 3) + image.shape[2:]
    for i, c in enumerate(clips):
        if c.index != i or c.seed != clip_seed(seed, i):
            raise InputError(f"finished clip {i} is clip {c.index} with seed {c.seed}; this chain's clip {i} has "
                             f"seed {clip_seed(seed, i)}")
        if tuple(np.shape(c.frames)) != shape:
            raise InputError(f"finished clip {i} has frames of shape {np.shape(c.frames)}, expected {shape}")
    if clips and np.abs(np.asarray(clips[0].condition, np.float32) - image).max() > 1e-6:
        raise InputError("finished clip 0 was conditioned on another image")
    return clips


def _chain_timings(made: List[ClipResult], resumed: int, start: float) -> dict:
    return {
        "clips": [c.timings for c in made],
        "clips_resumed": resumed,
        "conditioning_s": sum(c.timings["conditioning_s"] for c in made),
        "compile_s": made[0].timings["compile_s"] if made else 0.0,
        "step_s": [x for c in made for x in c.timings["step_s"]],
        "sampling_s": sum(c.timings["sampling_s"] for c in made),
        "decode_s": sum(c.timings["decode_s"] for c in made),
        "total_s": time.perf_counter() - start,
    }


class ChainedClipsPipeline(TypedPipeline):
    """`ChainedClipsPipeline.from_params(config=..., checkpoint=...)(image, seed=1, num_clips=3)`."""

    def __call__(self, image, seed: Optional[int] = None, *, finished_clips: Optional[Sequence[ClipResult]] = None,
                 clip_callback: Optional[Callable[[ClipResult], None]] = None, progress: bool = False,
                 callback: Optional[Callable[[StepInfo], Optional[bool]]] = None, height: Optional[int] = None,
                 width: Optional[int] = None, **overrides) -> VideoResult:
        """`num_clips` (an override) clips from `image` (prepared as ImageToVideoPipeline's): clip k
        uses seed `clip_seed(seed, k)` and the last frame of clip k-1 (`chain_condition`); the
        result holds the joined video (num_clips * (T - 1) + 1 frames) and every clip's latents
        (num_clips, T, 4, h, w). clip_callback(ClipResult) runs after each clip; `finished_clips`
        (clips 0..m-1 of the same chain and seed) resume it at clip m."""
        start = time.perf_counter()
        parts = self.components
        parts.require_motion_conditioning("chained clips")
        params = parts.call_params(**overrides)
        if seed is None and finished_clips:
            raise InputError("finished_clips resume a chain: give the seed it was started with")
        seed = resolve_seed(seed)
        prepared = parts.prepare_input(image, height, width)
        num_frames = parts.resolve(params)["num_frames"]
        clips = check_finished_clips(list(finished_clips or []), seed, params.num_clips, prepared.array, num_frames)
        # Earlier clips stay on the host as numpy: the device holds one clip at a time.
        frames = [c.frames for c in clips]
        latents = [c.latents for c in clips]
        condition = prepared.array if not clips else chain_condition(clips[-1].frames)
        made: List[ClipResult] = []
        for k in range(len(clips), params.num_clips):
            result = run_clip(parts, condition, clip_seed(seed, k), params, progress=progress, callback=callback,
                              clip=(k, params.num_clips))
            clip = ClipResult(k, result.seed, condition, result.frames, result.latents, result.timings)
            frames.append(clip.frames)
            latents.append(clip.latents)
            made.append(clip)
            if clip_callback is not None:
                clip_callback(clip)
            condition = chain_condition(clip.frames)
        # Clip k+1 starts on clip k's last frame: that shared frame is kept once.
        joined = np.concatenate([frames[0]] + [f[1:] for f in frames[1:]], axis=0)
        out = VideoResult(latents=np.stack(latents), frames=joined, video=np.clip((joined + 1.0) / 2.0, 0.0, 1.0),
                          seed=seed, params=params, input=prepared.info)
        out.timings = _chain_timings(made, len(clips), start)
        return out
