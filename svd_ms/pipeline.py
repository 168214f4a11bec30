"""The front door: `SVDInferPipeline(config, checkpoint, ...).generate(image)`.

One object for every kind of run, kept so that `from svd_ms.pipeline import SVDInferPipeline`
and every existing caller keep working. It builds the model once (svd_ms.pipelines.components)
and `generate()` hands each call to the typed pipeline for what it asks:
- `video=` -> `pipe.video_to_video` (VideoToVideoPipeline),
- `num_clips` > 1, `finished_clips` or `clip_callback` -> `pipe.chained_clips` (ChainedClipsPipeline),
- an SV3D config -> `pipe.orbit_views` (OrbitPipeline),
- otherwise -> `pipe.image_to_video` (ImageToVideoPipeline).
The typed pipelines can also be used directly; they share this object's model.
"""
from typing import Callable, Dict, List, Optional, Sequence, Union

import numpy as np

from . import sv3d
from .errors import InputError, ParamError
from .params import SVDParams
from .pipelines.chained import ChainedClipsPipeline, chain_condition
from .pipelines.components import PipelineComponents
from .pipelines.image_to_video import ImageToVideoPipeline
from .pipelines.orbit import OrbitPipeline
from .pipelines.results import ClipResult, StepInfo, VideoResult
from .pipelines.sampling import SamplerSet, video_to_video_start
from .pipelines.video_to_video import VideoToVideoPipeline
from .preparation import PreparedImage
from .seeds import clip_seed, offset_seed, resolve_seed

# Names callers import from here (they live in svd_ms.pipelines and svd_ms.seeds).
__all__ = ["SVDInferPipeline", "StepInfo", "VideoResult", "ClipResult", "chain_condition", "clip_seed",
           "video_to_video_start"]

# What generate() passes to svd_ms.preparation.prepare_input (the CLI's flags of the same names).
PREPARATION_ARGS = ("height", "width", "keep_background", "image_frame_ratio")


class SVDInferPipeline:
    """Stable Video Diffusion and its variants, one front door.

    `SVDInferPipeline(config, checkpoint, num_frames=14, ...)` or `SVDInferPipeline(params=SVDParams(...))`;
    the keyword arguments are the fields of `svd_ms.params.SVDParams`, validated there.
    """

    def __init__(self, config: Optional[Union[str, Dict]] = None, checkpoint: Optional[str] = None, *,
                 params: Optional[SVDParams] = None, **settings):
        if params is None:
            params = SVDParams(config=config, checkpoint=checkpoint, **settings)
        elif config is not None or checkpoint is not None or settings:
            raise InputError("give either params= or the individual settings, not both")
        self.components = PipelineComponents(params)
        self.image_to_video = ImageToVideoPipeline(self.components)
        self.video_to_video = VideoToVideoPipeline(self.components)
        self.chained_clips = ChainedClipsPipeline(self.components)
        self.orbit_views = OrbitPipeline(self.components)

    # ---- the model and its settings ---------------------------------------------------------
    @property
    def params(self) -> SVDParams:
        return self.components.params

    @property
    def engine(self):
        return self.components.engine

    @property
    def orbit(self) -> bool:
        return self.components.orbit

    @property
    def input_keys(self) -> List[str]:
        return self.components.input_keys

    @property
    def size_multiple(self) -> int:
        return self.components.size_multiple

    @property
    def weights_info(self) -> Dict:
        return self.components.weights_info

    @property
    def precision_decisions(self):
        return self.components.precision_decisions

    @property
    def untrained(self) -> bool:
        return self.params.checkpoint is None

    @property
    def default_num_frames(self) -> int:
        return self.components.defaults.num_frames

    @property
    def default_num_steps(self) -> int:
        return self.components.defaults.num_steps

    @property
    def default_noise_aug_strength(self) -> float:
        return self.components.defaults.noise_aug_strength

    @property
    def num_frames(self) -> int:
        return self.resolve(self.params)["num_frames"]

    @property
    def num_steps(self) -> int:
        return self.resolve(self.params)["num_steps"]

    @property
    def noise_aug_strength(self) -> float:
        return self.resolve(self.params)["noise_aug_strength"]

    def resolve(self, params: Optional[SVDParams] = None) -> Dict[str, object]:
        """The concrete settings of `params` on this model: num_frames, num_steps,
        decode_chunk_size, noise_aug_strength, fps, motion_bucket_id (unset values take the
        model's defaults, svd_ms.pipelines.defaults)."""
        return self.components.resolve(params)

    def call_params(self, **overrides) -> SVDParams:
        """This pipeline's parameters with per-call `overrides`, validated; the model fields
        (config, checkpoint, precision, attention) cannot change without a new pipeline."""
        return self.components.call_params(**overrides)

    def check_memory(self, num_frames: int, height: int, width: int, decode_chunk_size: int,
                     params: Optional[SVDParams] = None) -> None:
        self.components.check_memory(num_frames, height, width, decode_chunk_size, params)

    # ---- sampler and guider -----------------------------------------------------------------
    def sampler_config(self, params: Optional[SVDParams] = None) -> Dict:
        """The sgm sampler_config a run of `params` uses (the config's, with its sampling options)."""
        return self.components.samplers.sampler_config(params or self.params)

    def sampling_for(self, num_frames: int, params: Optional[SVDParams] = None) -> SamplerSet:
        return self.components.samplers.get(num_frames, params or self.params)

    @property
    def sampler(self):
        return self.sampling_for(self.num_frames).sampler

    @property
    def guider(self):
        return self.sampling_for(self.num_frames).guider

    @property
    def denoiser_step(self):
        return self.sampling_for(self.num_frames).denoiser_step

    def use_sampler(self, sampler_config, num_steps: Optional[int] = None, skip_unused_copies: bool = True) -> None:
        """Make an sgm `sampler_config` this pipeline's default sampler and guider, without rebuilding
        the model. `skip_unused_copies=False` keeps the unconditional batch even where guidance is 1."""
        config_steps = self.components.samplers.replace_base(sampler_config, skip_unused_copies)
        steps = num_steps or config_steps
        if steps:
            self.components.params = self.params.replace(num_steps=int(steps))

    # ---- the steps every run takes -----------------------------------------------------------
    def prepare_input(self, image, height: Optional[int] = None, width: Optional[int] = None,
                      keep_background: bool = False, image_frame_ratio: Optional[float] = None) -> PreparedImage:
        """`image` prepared as the command line prepares it for this model (svd_ms.preparation)."""
        return self.components.prepare_input(image, height, width, keep_background, image_frame_ratio)

    def conditioning(self, image: np.ndarray, cond_noise: np.ndarray, camera: Optional[Dict] = None,
                     params: Optional[SVDParams] = None):
        return self.components.conditioning(image, cond_noise, camera, params)

    def encode_video(self, frames: np.ndarray, chunk_size: Optional[int] = None):
        return self.components.encode_video(frames, chunk_size)

    def decode_latents(self, latents, decode_chunk_size: Optional[int] = None, callback: Optional[Callable] = None):
        """Sampled latents -> (frames in [-1, 1], video in [0, 1]), float32 numpy arrays."""
        return self.components.decode_latents(latents, decode_chunk_size, callback)

    # ---- generation -------------------------------------------------------------------------
    def __call__(self, image, seed: Optional[int] = None, **kwargs) -> np.ndarray:
        """The video alone: float32 (T, 3, H, W) in [0, 1]."""
        return self.generate(image, seed, **kwargs).video

    def generate(self, image=None, seed: Optional[int] = None, latent_noise=None, cond_noise=None,
                 progress: bool = False, callback: Optional[Callable[[StepInfo], Optional[bool]]] = None,
                 output_type: str = "video", elevations_deg=None, azimuths_deg=None, video=None, sampler_noise=None,
                 finished_clips: Optional[Sequence[ClipResult]] = None,
                 clip_callback: Optional[Callable[[ClipResult], None]] = None, **overrides) -> VideoResult:
        """One video; the arguments are those of the typed pipeline the call goes to (see the
        module docstring): image (path, PIL image, pixels or float array, prepared as the CLI
        prepares it, with `height`, `width`, `keep_background`, `image_frame_ratio` as its flags),
        seed (drawn when None; `result.seed` is always the seed used), noise, callback,
        output_type, the SV3D camera, `video` (video-to-video), chain resumption, and per-call
        SVDParams sampling fields as `overrides`.

        A camera path is accepted only by a model whose conditioner takes one; every other run,
        a chain included, refuses it with the same error."""
        prep = {k: overrides.pop(k) for k in PREPARATION_ARGS if k in overrides}
        params = self.call_params(**overrides)
        camera_given = elevations_deg is not None or azimuths_deg is not None
        if camera_given and not sv3d.takes_camera(self.input_keys):
            sv3d.resolve_camera(self.input_keys, self.resolve(params)["num_frames"], elevations_deg, azimuths_deg)
        noise = dict(latent_noise=latent_noise, cond_noise=cond_noise, sampler_noise=sampler_noise)
        if params.num_clips > 1 or finished_clips is not None or clip_callback is not None:
            self._refuse_for_chain(video, output_type, noise)
            return self.chained_clips(image, seed, finished_clips=finished_clips, clip_callback=clip_callback,
                                      progress=progress, callback=callback, **self._image_prep(prep), **overrides)
        common = dict(progress=progress, callback=callback, output_type=output_type, **noise, **overrides)
        if video is not None:
            return self.video_to_video(video, image, seed, **self._image_prep(prep), **common)
        if self.orbit:
            return self.orbit_views(image, seed, elevations_deg=elevations_deg, azimuths_deg=azimuths_deg, **prep,
                                    **common)
        return self.image_to_video(image, seed, **self._image_prep(prep), **common)

    def _image_prep(self, prep: Dict) -> Dict:
        sv3d_only = [k for k in ("keep_background", "image_frame_ratio") if prep.get(k) not in (None, False)]
        if sv3d_only:
            raise InputError(f"{' and '.join(sv3d_only)} prepare SV3D inputs; this run is not an SV3D orbit")
        return {k: prep[k] for k in ("height", "width") if k in prep}

    def _refuse_for_chain(self, video, output_type: str, noise: Dict) -> None:
        self.components.require_motion_conditioning("chained clips")
        if video is not None:
            raise InputError("chained clips (num_clips > 1) start from an image; video-to-video makes one clip")
        if output_type != "video":
            raise InputError("chained clips need their frames (each clip starts from the previous one's last "
                             "frame): output_type must be 'video'")
        if any(v is not None for v in noise.values()):
            raise InputError("latent_noise, cond_noise and sampler_noise fix one clip's noise; a chain draws each "
                             "clip's noise from its seed")

    def generate_many(self, image, num_videos: int, seed: Optional[int] = None, **kwargs) -> List[VideoResult]:
        """`num_videos` videos of one image, video i with seed `offset_seed(seed, i)` (each equal to
        a separate `generate` call with that seed). Without a seed, one is drawn (svd_ms.seeds) and
        each result records its own."""
        if not isinstance(num_videos, int) or isinstance(num_videos, bool) or num_videos < 1:
            raise ParamError("num_videos", f"num_videos={num_videos!r} must be an integer >= 1")
        base = resolve_seed(seed)
        prep = {k: kwargs.pop(k) for k in PREPARATION_ARGS if k in kwargs}
        prepared = self.prepare_input(image, **prep) if kwargs.get("video") is None else image
        return [self.generate(prepared, offset_seed(base, i), **kwargs) for i in range(num_videos)]
