"""What every pipeline shares: the built engine, the model defaults, the sampler cache, and the
steps all runs take (preparing the input, conditioning, encoding, decoding, the memory check).

One `PipelineComponents` is built per model (`SVDParams`' model settings); the typed pipelines
(image-to-video, video-to-video, chained clips, SV3D orbits) are views over the same components,
as diffusers' pipelines share their modules.
"""
from typing import Callable, Dict, Optional

import numpy as np
from mindspore import Tensor, ops

from .. import sv3d
from ..errors import ConfigError, InputError, ParamError
from ..params import MODEL_FIELDS, SVDParams
from ..preparation import PreparedImage, prepare_input
from ..runtime.budget import available_host_bytes, check_fits, estimate_generation_bytes
from ..diffusers_config import model_config_for
from ..util import load_config
from .defaults import ModelDefaults
from .engine import build_engine
from .results import StepInfo
from .sampling import SamplerCache, check_finite, notify

UNCOND_ZERO_KEYS = ["cond_frames", "cond_frames_without_noise"]
# Chaining and video-to-video keep fps and motion from clip to clip; a model not conditioned on
# them (SV3D: camera orbit) has no meaning for either.
MOTION_KEYS = ("fps_id", "motion_bucket_id")


class PipelineComponents:
    """The model built once from `params` (its model settings) and the parts every run uses."""

    def __init__(self, params: SVDParams):
        self.params = params
        cfg = load_config(model_config_for(params.config, params.checkpoint), require_model=True)
        self.defaults = ModelDefaults.from_model_config(cfg.model, params.config)
        self.engine, self.precision_decisions, self.weights_info, self.size_multiple = build_engine(
            cfg, params.model_settings, params.num_frames or self.defaults.num_frames)
        self.samplers = SamplerCache(self.engine, self.defaults)

    # ---- settings ---------------------------------------------------------------------------
    @property
    def orbit(self) -> bool:
        return self.defaults.orbit

    @property
    def input_keys(self):
        return list(self.defaults.input_keys)

    def resolve(self, params: Optional[SVDParams] = None) -> Dict[str, object]:
        """The concrete settings of `params` on this model (svd_ms.pipelines.defaults)."""
        params = params or self.params
        return self.defaults.resolve(params, self.samplers.base_config)

    def call_params(self, **overrides) -> SVDParams:
        """The pipeline's parameters with per-call `overrides`, validated by value; the model
        fields cannot change without a new pipeline."""
        fixed = sorted(set(overrides) & set(MODEL_FIELDS))
        if any(overrides[k] != getattr(self.params, k) for k in fixed):
            raise ParamError(fixed[0], f"{', '.join(fixed)} cannot change per call; build a new pipeline")
        changes = {k: v for k, v in overrides.items() if k not in MODEL_FIELDS}
        return self.params.replace(**changes) if changes else self.params

    def require_motion_conditioning(self, feature: str) -> None:
        keys = set(self.engine.conditioner.input_keys)
        missing = [k for k in MOTION_KEYS if k not in keys]
        if missing:
            raise ConfigError(f"{feature} keeps fps and motion from clip to clip, but config {self.params.config!r} "
                              f"is not conditioned on {', '.join(missing)} (an SV3D-style model?); refused")

    # ---- input ------------------------------------------------------------------------------
    def prepare_input(self, image, height: Optional[int] = None, width: Optional[int] = None,
                      keep_background: bool = False, image_frame_ratio: Optional[float] = None) -> PreparedImage:
        """`image` as this model is conditioned on it: svd_ms.preparation.prepare_input, the
        function the command line and the web page use, with this model's kind filled in."""
        return prepare_input(image, orbit=self.orbit, height=height, width=width, keep_background=keep_background,
                             image_frame_ratio=image_frame_ratio)

    def check_image_size(self, image: np.ndarray) -> None:
        h, w = image.shape[2:]
        if h % self.size_multiple or w % self.size_multiple:
            raise InputError(f"image height and width must be multiples of {self.size_multiple}, got {h}x{w}")

    def check_memory(self, num_frames: int, height: int, width: int, decode_chunk_size: int,
                     params: Optional[SVDParams] = None) -> None:
        """Refuse, before allocating anything, a run the host cannot hold (see runtime.budget)."""
        channels = int(self.engine.model.diffusion_model.model_channels)
        copies = self.samplers.get(num_frames, params or self.params).guider.num_copies
        estimate = estimate_generation_bytes(num_frames, height, width, min(decode_chunk_size, num_frames),
                                             channels, copies)
        check_fits(estimate, available_host_bytes(), f"{num_frames} frames of {width}x{height}")

    # ---- conditioning -----------------------------------------------------------------------
    def conditioner_batch(self, image: np.ndarray, cond_noise: np.ndarray, params: SVDParams,
                          camera: Optional[Dict]) -> Dict:
        """What the config's conditioner asks for, and only that (SV3D takes no fps or motion)."""
        sizes = self.resolve(params)
        t, aug = sizes["num_frames"], sizes["noise_aug_strength"]
        values = {
            "cond_frames_without_noise": Tensor(image),
            "cond_frames": Tensor(image + aug * cond_noise),
            "fps_id": Tensor(np.full((t,), params.fps - 1, np.float32)),
            "motion_bucket_id": Tensor(np.full((t,), params.motion_bucket_id, np.float32)),
            "cond_aug": Tensor(np.full((t,), aug, np.float32)),
        }
        if camera is not None:
            values.update({key: Tensor(camera[key].astype(np.float32)) for key in sv3d.CAMERA_KEYS})
        missing = [k for k in self.engine.conditioner.input_keys if k not in values]
        if missing:
            raise ConfigError(f"the conditioner needs inputs this pipeline cannot provide: {missing}")
        return {k: values[k] for k in self.engine.conditioner.input_keys}

    def conditioning(self, image: np.ndarray, cond_noise: np.ndarray, camera: Optional[Dict] = None,
                     params: Optional[SVDParams] = None):
        """(c, uc) with crossattn and concat repeated to every frame, as the sampling script does."""
        params = params or self.params
        t = self.resolve(params)["num_frames"]
        batch = self.conditioner_batch(image, cond_noise, params, camera)
        c, uc = self.engine.conditioner.get_unconditional_conditioning(
            batch, batch_uc=dict(batch), force_uc_zero_embeddings=UNCOND_ZERO_KEYS)
        for cond in (c, uc):
            for key in ("crossattn", "concat"):
                if key in cond:
                    cond[key] = ops.repeat_interleave(cond[key], t, 0)
        return c, uc

    # ---- the VAE ----------------------------------------------------------------------------
    def encode_video(self, frames: np.ndarray, chunk_size: Optional[int] = None):
        """(T, 3, H, W) frames in [-1, 1] -> scaled latents, the VAE posterior's mode (as the
        engine's `encode_video_latents`), `chunk_size` frames at a time."""
        chunk = chunk_size or frames.shape[0]
        parts = [self.engine.encode_video_latents(Tensor(np.ascontiguousarray(frames[i:i + chunk], np.float32)))
                 for i in range(0, frames.shape[0], chunk)]
        z = ops.cat(parts, axis=0) if len(parts) > 1 else parts[0]
        check_finite(z, "encoded input video")
        return z

    def decode_latents(self, latents, decode_chunk_size: Optional[int] = None, callback: Optional[Callable] = None):
        """Sampled latents -> (frames in [-1, 1], video in [0, 1]), float32 numpy arrays."""
        z = latents if isinstance(latents, Tensor) else Tensor(np.asarray(latents, np.float32))
        chunk = decode_chunk_size or z.shape[0]
        chunks = -(-z.shape[0] // chunk)
        frames = self.engine.decode_first_stage(
            z, chunk, callback=lambda i, x: notify(callback, StepInfo("decoding", i, chunks)))
        check_finite(frames, "decoded frames")
        frames = frames.asnumpy().astype(np.float32)
        return frames, np.clip((frames + 1.0) / 2.0, 0.0, 1.0)


OUTPUT_TYPES = ("video", "latent")


def check_output_type(output_type: str) -> None:
    if output_type not in OUTPUT_TYPES:
        raise InputError(f"output_type must be 'video' or 'latent', got {output_type!r}")


def single_clip_params(parts: PipelineComponents, overrides: Dict, what: str) -> SVDParams:
    """The call's parameters for a one-clip run from an image: chains and strength are refused."""
    params = parts.call_params(**overrides)
    if params.num_clips > 1:
        raise ParamError("num_clips", f"num_clips={params.num_clips}: {what} makes one clip; chained clips are "
                         f"ChainedClipsPipeline's (or generate(..., num_clips=N))")
    if params.strength is not None:
        raise ParamError("strength", "strength applies to video-to-video only: give a video")
    return params


class TypedPipeline:
    """A pipeline for one kind of run over shared `PipelineComponents`."""

    def __init__(self, components: PipelineComponents):
        self.components = components

    @classmethod
    def from_params(cls, params: Optional[SVDParams] = None, **settings):
        """Build the model: `from_params(SVDParams(...))` or `from_params(config=..., checkpoint=...)`."""
        if params is None:
            params = SVDParams(**settings)
        elif settings:
            raise InputError("give either params= or the individual settings, not both")
        return cls(PipelineComponents(params))
