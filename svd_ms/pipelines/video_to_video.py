"""Video-to-video: the input frames are encoded, noised `strength` of the way up the schedule
and sampled back from there (SDEdit-style), conditioned on an image or the video's first frame."""
import os
from typing import Callable, Optional

import numpy as np

from ..errors import InputError
from ..params import DEFAULT_STRENGTH
from ..preparation import load_video, video_to_array
from ..seeds import resolve_seed
from .clip import ClipNoise, run_clip
from .components import TypedPipeline, check_output_type
from .results import StepInfo, VideoResult
from .sampling import video_to_video_start


class VideoToVideoPipeline(TypedPipeline):
    """`VideoToVideoPipeline.from_params(config=..., checkpoint=...)('clip.mp4', strength=0.6)`."""

    def __call__(self, video, image=None, seed: Optional[int] = None, *, latent_noise=None, cond_noise=None,
                 sampler_noise=None, progress: bool = False,
                 callback: Optional[Callable[[StepInfo], Optional[bool]]] = None, output_type: str = "video",
                 height: Optional[int] = None, width: Optional[int] = None, **overrides) -> VideoResult:
        """Restyle `video`: a path (resampled to num_frames evenly spaced frames and sized like
        an image, as the command line's --video) or T frames (uint8 (T, H, W, 3) or float
        (T, 3, H, W) in [-1, 1]).

        image: the conditioning image (prepared to the video's size), else the first frame.
        strength (an override, default 0.7): the share of the schedule redone; 1 starts from pure
            noise and does not use the video's content.
        Seed, noise, callback and overrides as ImageToVideoPipeline.
        """
        parts = self.components
        parts.require_motion_conditioning("video-to-video")
        check_output_type(output_type)
        params = parts.call_params(**overrides)
        if params.num_clips > 1:
            raise InputError("chained clips (num_clips > 1) start from an image; video-to-video makes one clip")
        sizes = parts.resolve(params)
        t = sizes["num_frames"]
        if isinstance(video, (str, os.PathLike)):
            frames, info, _ = load_video(os.fspath(video), t, height, width)
            source = video_to_array(frames)
        else:
            source, info = video_to_array(video), {"input": "frames"}
        if source.shape[0] != t:
            raise InputError(f"the input video has {source.shape[0]} frames where the clip has {t} (num_frames); "
                             f"resample it first (svd_ms.preparation.load_video does)")
        if image is None:
            condition = np.ascontiguousarray(source[:1])
        else:
            prepared = parts.prepare_input(image, *source.shape[2:])
            condition, info = prepared.array, dict(info, condition_image=prepared.info)
        if source.shape[2:] != condition.shape[2:]:
            raise InputError(f"the input video is {source.shape[3]}x{source.shape[2]} but the conditioning image is "
                             f"{condition.shape[3]}x{condition.shape[2]}; they must match")
        strength = DEFAULT_STRENGTH if params.strength is None else params.strength
        start_index = video_to_video_start(sizes["num_steps"], strength)
        seed = resolve_seed(seed)
        result = run_clip(parts, condition, seed, params, noise=ClipNoise(latent_noise, cond_noise, sampler_noise),
                          progress=progress, callback=callback, output_type=output_type, source=source,
                          start_index=start_index)
        result.input = info
        return result
