"""Image-to-video inference: `SVDInferPipeline(config, checkpoint, ...).generate(image)`.

Does what upstream's sampling script does: conditioner (with zeroed image embeddings for the
unconditional branch), sampling with the guider, chunked decoding, clamping. The model is built
once; the sampling settings (frames, steps, fps, motion, noise augmentation, decode chunk) can
change from call to call.

Two uses beyond one clip from one image:
- chained clips (`num_clips` > 1): clip k+1 is conditioned on the last frame of clip k, so that
  a chain makes one long video; finished clips live on the host and a chain can resume from them;
- video-to-video (`video=`): the input frames are encoded, noised to a point of the schedule set
  by `strength`, and sampled back from there (`sample_from_step`).
"""
import copy
import json
import os
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import mindspore as ms
import numpy as np
from mindspore import Tensor, ops
from omegaconf import OmegaConf

from . import sv3d
from .checkpoint import load_checkpoint_into
from .diffusers_config import model_config_for
from .errors import ConfigError, GenerationCancelled, InputError, NonFiniteError, ParamError
from .media import image_to_array, load_video, video_to_array
from .models.diffusion import GuidedDenoiserStep
from .modules.diffusionmodules import guiders, sampling
from .params import DEFAULT_STRENGTH, MODEL_FIELDS, SVDParams
from .precision import apply_precision
from .sampling_options import apply_sampling_options
from .runtime.budget import available_host_bytes, check_fits, estimate_generation_bytes
from .util import instantiate_from_config, load_config

DEFAULT_NUM_FRAMES = 14
DEFAULT_NUM_STEPS = 25
DEFAULT_NOISE_AUG_STRENGTH = 0.02
UNCOND_ZERO_KEYS = ["cond_frames", "cond_frames_without_noise"]
# Chaining and video-to-video keep fps and motion from clip to clip; a model not conditioned on
# them (SV3D: camera orbit) has no meaning for either.
MOTION_KEYS = ("fps_id", "motion_bucket_id")


@dataclass
class StepInfo:
    """What a step callback sees. `stage` is 'sampling' (one call per sampler step, with the
    step's sigma and the latents after it) or 'decoding' (one call per decoded chunk)."""
    stage: str
    index: int
    total: int
    sigma: Optional[float] = None
    latents: Optional[Tensor] = None
    clip: int = 0  # the clip of a chain this step belongs to


@dataclass
class VideoResult:
    """One generated video. `video`: float32 (T, 3, H, W) in [0, 1]; `frames`: the decoded frames
    in [-1, 1] before clamping; `latents`: the sampled latents (scaled, as the UNet sees them).
    `video` and `frames` are None when decoding was skipped (`output_type='latent'`). For SV3D,
    `decoded` is the decoder's output before the last frame is replaced by the input image, and
    `camera` the camera path (elevations_deg, azimuths_deg, polars_rad, azimuths_rad) of sv3d_p."""
    latents: np.ndarray
    video: Optional[np.ndarray] = None
    frames: Optional[np.ndarray] = None
    decoded: Optional[np.ndarray] = None
    seed: Optional[int] = None
    params: Optional[SVDParams] = None
    camera: Optional[Dict[str, np.ndarray]] = None
    timings: Dict[str, object] = field(default_factory=dict)

    def __getitem__(self, key):  # result["video"] reads like diffusers' outputs
        if self.camera is not None and key in self.camera:
            return self.camera[key]
        return getattr(self, key)

    def __contains__(self, key) -> bool:
        return (self.camera is not None and key in self.camera) or getattr(self, key, None) is not None


@dataclass
class ClipResult:
    """One finished clip of a chain, as `clip_callback` receives it and `finished_clips` takes it
    back. `condition`: the (1, 3, H, W) image in [-1, 1] the clip was conditioned on; `frames`:
    its decoded (T, 3, H, W) frames in [-1, 1] before clamping; `latents`: its sampled latents."""
    index: int
    seed: int
    condition: np.ndarray
    frames: np.ndarray
    latents: np.ndarray
    timings: Dict[str, object] = field(default_factory=dict)


def clip_seed(seed: int, index: int) -> int:
    """The seed of clip `index` of a chain whose seed is `seed`: clip 0 uses `seed` itself (so it is
    the video a single-clip run makes), later clips a hash of (seed, index), which no other image's
    seed (base + i) lines up with."""
    if index == 0:
        return int(seed)
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0])


def chain_condition(frames: np.ndarray) -> np.ndarray:
    """The conditioning image of the next clip: the last decoded frame as float, clamped to the
    image range [-1, 1] (the video's last frame before 8-bit rounding)."""
    return np.clip(np.asarray(frames[-1:], np.float32), -1.0, 1.0)


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


def _check_finite(x, stage: str):
    if not bool(ops.isfinite(x).all()):
        raise NonFiniteError(f"non-finite values (NaN/inf) in {stage}; stopping instead of writing a broken video")


class _Sampling:
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


class SVDInferPipeline:
    """Stable Video Diffusion, image to video.

    `SVDInferPipeline(config, checkpoint, num_frames=14, ...)` or `SVDInferPipeline(params=SVDParams(...))`;
    the keyword arguments are the fields of `svd_ms.params.SVDParams`, validated there.
    """

    def __init__(self, config: Optional[Union[str, Dict]] = None, checkpoint: Optional[str] = None, *,
                 params: Optional[SVDParams] = None, **settings):
        if params is None:
            params = SVDParams(config=config, checkpoint=checkpoint, **settings)
        elif config is not None or checkpoint is not None or settings:
            raise InputError("give either params= or the individual settings, not both")
        self.params = params
        cfg = load_config(model_config_for(params.config, params.checkpoint), require_model=True)
        model_params = cfg.model.params
        network_params = model_params.network_config.params
        network_params.attention = params.attention
        network_params.ff_chunk_size = params.ff_chunk_size
        sampler_config = model_params.get("sampler_config")
        if sampler_config is None:
            raise ConfigError(f"config {params.config!r} has no model.params.sampler_config")
        self._sampler_config = OmegaConf.to_container(sampler_config, resolve=True)
        sampler_params = self._sampler_config.get("params") or {}
        guider_params = (sampler_params.get("guider_config") or {}).get("params") or {}
        # SV3D (a conditioner without fps and motion inputs) has its own defaults in upstream's script.
        self.input_keys = sv3d.conditioner_input_keys(cfg.model)
        self.orbit = sv3d.is_orbit_model(self.input_keys)
        self.default_num_frames = int(guider_params.get("num_frames")
                                      or (sv3d.NUM_FRAMES if self.orbit else DEFAULT_NUM_FRAMES))
        self.default_num_steps = int(sampler_params.get("num_steps")
                                     or (sv3d.NUM_STEPS if self.orbit else DEFAULT_NUM_STEPS))
        self.default_noise_aug_strength = sv3d.COND_AUG if self.orbit else DEFAULT_NOISE_AUG_STRENGTH
        cfg_guider = sampler_config.params.get("guider_config", None)
        if cfg_guider is not None and "max_scale" in (cfg_guider.get("params", None) or {}):
            # The engine's own sampler is built for the default clip length, as upstream's script does.
            cfg_guider.params.num_frames = self.num_frames

        self.engine = instantiate_from_config(cfg.model)
        self.engine.set_train(False)
        # Precision first: each tensor is then written straight into its parameter's dtype, so an O2
        # model never holds a float32 copy of its float16 weights.
        self.precision_decisions = apply_precision(self.engine, params.amp_level)
        if params.checkpoint is None:
            from .weights import randomize
            randomize(self.engine, seed=0)
            self.weights_info = {"random": True}
        else:
            self.weights_info = load_checkpoint_into(self.engine, params.checkpoint)
        if params.unet_weights:
            from .unet_weights import load_unet_weights
            self.weights_info = dict(self.weights_info, unet_weights=load_unet_weights(self.engine, params.unet_weights))
        if params.lora:
            from .lora import merge_lora
            self.weights_info = dict(self.weights_info, lora=merge_lora(self.engine, params.lora))
        # The VAE halves the size 3 times, each UNet level but the last once more.
        self.size_multiple = 8 * 2 ** (len(network_params.get("channel_mult", [1, 2, 4, 4])) - 1)
        self._skip_unused_copies = True
        self._sampling: Dict[tuple, _Sampling] = {}
        self._denoiser_steps: Dict[tuple, GuidedDenoiserStep] = {}
        self._refresh_default_sampling()

    # ---- settings ---------------------------------------------------------------------------
    @property
    def num_frames(self) -> int:
        return self.params.num_frames or self.default_num_frames

    @property
    def num_steps(self) -> int:
        return self.resolve(self.params)["num_steps"]

    @property
    def noise_aug_strength(self) -> float:
        return self.resolve(self.params)["noise_aug_strength"]

    @property
    def untrained(self) -> bool:
        return self.params.checkpoint is None

    def resolve(self, params: SVDParams) -> Dict[str, object]:
        """The concrete frame count, step count, decode chunk and noise augmentation of `params`
        for this model (unset values take the model's defaults)."""
        t = params.num_frames or self.default_num_frames
        aug = params.noise_aug_strength
        config_steps = (self.sampler_config(params).get("params") or {}).get("num_steps")
        return {"num_frames": t, "num_steps": params.num_steps or config_steps or self.default_num_steps,
                "decode_chunk_size": params.decode_chunk_size or t,
                "noise_aug_strength": self.default_noise_aug_strength if aug is None else aug}

    def call_params(self, **overrides) -> SVDParams:
        """This pipeline's parameters with per-call `overrides`, validated; the model fields
        (config, checkpoint, precision, attention) cannot change without a new pipeline."""
        fixed = sorted(set(overrides) & set(MODEL_FIELDS))
        if any(overrides[k] != getattr(self.params, k) for k in fixed):
            raise ParamError(fixed[0], f"{', '.join(fixed)} cannot change per call; build a new pipeline")
        return self.params.replace(**overrides) if overrides else self.params

    def check_memory(self, num_frames: int, height: int, width: int, decode_chunk_size: int,
                     params: Optional[SVDParams] = None) -> None:
        """Refuse, before allocating anything, a run the host cannot hold (see runtime.budget)."""
        channels = int(self.engine.model.diffusion_model.model_channels)
        estimate = estimate_generation_bytes(num_frames, height, width, min(decode_chunk_size, num_frames),
                                             channels, self.sampling_for(num_frames, params).guider.num_copies)
        check_fits(estimate, available_host_bytes(), f"{num_frames} frames of {width}x{height}")

    def sampler_config(self, params: Optional[SVDParams] = None) -> Dict:
        """The sgm sampler_config a run of `params` uses: the model config's, with the sampler and
        guidance options of `params` applied over it (svd_ms.sampling_options)."""
        params = params or self.params
        options = params.sampling_options()
        if not options:
            return self._sampler_config
        return apply_sampling_options(self._sampler_config, **options)

    def sampling_for(self, num_frames: int, params: Optional[SVDParams] = None) -> _Sampling:
        params = params or self.params
        key = (json.dumps(params.sampling_options(), sort_keys=True), num_frames)
        if key not in self._sampling:
            self._sampling[key] = _Sampling(self.sampler_config(params), num_frames, self._skip_unused_copies,
                                            self._denoiser_step_for)
        return self._sampling[key]

    def _denoiser_step_for(self, guider) -> GuidedDenoiserStep:
        """One compiled step per way of combining the copies: MindSpore's graph parser has been seen
        resolving `guider(...)` to a method of an earlier guider when a step's guider is swapped."""
        key = guider.combination_key()
        if key not in self._denoiser_steps:
            self._denoiser_steps[key] = GuidedDenoiserStep(self.engine, guider)
        return self._denoiser_steps[key]

    def _refresh_default_sampling(self) -> None:
        default = self.sampling_for(self.num_frames)
        self.sampler, self.guider, self.denoiser_step = default.sampler, default.guider, default.denoiser_step

    def use_sampler(self, sampler_config, num_steps: Optional[int] = None, skip_unused_copies: bool = True) -> None:
        """Make an sgm `sampler_config` this pipeline's default sampler and guider, without rebuilding
        the model. `skip_unused_copies=False` keeps the unconditional batch even where guidance is 1."""
        config = OmegaConf.to_container(OmegaConf.create(sampler_config), resolve=True)
        steps = num_steps or (config.get("params") or {}).get("num_steps")
        self._sampler_config = config
        self._skip_unused_copies = skip_unused_copies
        self._sampling.clear()
        if steps:
            self.params = self.params.replace(num_steps=int(steps))
        self._refresh_default_sampling()

    # ---- conditioning -------------------------------------------------------------------------
    def _batch(self, image: np.ndarray, cond_noise: np.ndarray, params: SVDParams, camera: Optional[Dict]) -> Dict:
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
        batch = self._batch(image, cond_noise, params, camera)
        c, uc = self.engine.conditioner.get_unconditional_conditioning(
            batch, batch_uc=dict(batch), force_uc_zero_embeddings=UNCOND_ZERO_KEYS)
        for cond in (c, uc):
            for key in ("crossattn", "concat"):
                if key in cond:
                    cond[key] = ops.repeat_interleave(cond[key], t, 0)
        return c, uc

    # ---- sampling and decoding ----------------------------------------------------------------
    def sample_latents(self, c, uc, latent_noise: np.ndarray, noise: Callable, num_steps: int,
                       callback: Optional[Callable] = None, start_index: int = 0, clean_latents=None,
                       params: Optional[SVDParams] = None):
        """Sampled latents and the wall time of each step run. With `start_index` > 0 only the last
        num_steps - start_index steps run, from `clean_latents` noised (video-to-video)."""
        t = latent_noise.shape[0]
        parts = self.sampling_for(t, params)
        cond = parts.guider.prepare_cond(c, uc)
        ioi = Tensor(np.zeros((parts.guider.num_copies, t), np.float32))
        concat, crossattn, vector = cond.get("concat"), cond.get("crossattn"), cond.get("vector")
        sigmas = parts.sampler.sigmas(num_steps)
        steps_run = num_steps - start_index
        step_times: List[float] = []
        last = [time.perf_counter()]

        def denoise(x, sigma):
            return parts.denoiser_step(x, Tensor([sigma], ms.float32), concat, crossattn, vector, ioi, t)

        def on_step(i, x, denoised):
            _check_finite(x, f"latents after sampling step {i + 1}/{steps_run}")
            now = time.perf_counter()
            step_times.append(now - last[0])
            last[0] = now
            _notify(callback, StepInfo("sampling", i, steps_run, float(sigmas[start_index + i + 1]), x))

        z = sample_from_step(parts.sampler, denoise, Tensor(latent_noise), num_steps, start_index, clean_latents,
                             noise, on_step)
        return z, step_times

    def encode_video(self, frames: np.ndarray, chunk_size: Optional[int] = None):
        """(T, 3, H, W) frames in [-1, 1] -> scaled latents, the VAE posterior's mode (as the
        engine's `encode_video_latents`), `chunk_size` frames at a time."""
        chunk = chunk_size or frames.shape[0]
        parts = [self.engine.encode_video_latents(Tensor(np.ascontiguousarray(frames[i:i + chunk], np.float32)))
                 for i in range(0, frames.shape[0], chunk)]
        z = ops.cat(parts, axis=0) if len(parts) > 1 else parts[0]
        _check_finite(z, "encoded input video")
        return z

    def decode_latents(self, latents, decode_chunk_size: Optional[int] = None, callback: Optional[Callable] = None):
        """Sampled latents -> (frames in [-1, 1], video in [0, 1]), float32 numpy arrays."""
        z = latents if isinstance(latents, Tensor) else Tensor(np.asarray(latents, np.float32))
        chunk = decode_chunk_size or z.shape[0]
        chunks = -(-z.shape[0] // chunk)
        frames = self.engine.decode_first_stage(
            z, chunk, callback=lambda i, x: _notify(callback, StepInfo("decoding", i, chunks)))
        _check_finite(frames, "decoded frames")
        frames = frames.asnumpy().astype(np.float32)
        return frames, np.clip((frames + 1.0) / 2.0, 0.0, 1.0)

    def __call__(self, image, seed: Optional[int] = None, **kwargs) -> np.ndarray:
        """The video alone: float32 (T, 3, H, W) in [0, 1]."""
        return self.generate(image, seed, **kwargs).video

    def generate(self, image=None, seed: Optional[int] = None, latent_noise=None, cond_noise=None,
                 progress: bool = False, callback: Optional[Callable[[StepInfo], Optional[bool]]] = None,
                 output_type: str = "video", elevations_deg=None, azimuths_deg=None, video=None, sampler_noise=None,
                 finished_clips: Optional[Sequence[ClipResult]] = None,
                 clip_callback: Optional[Callable[[ClipResult], None]] = None, **overrides) -> VideoResult:
        """Generate one video from `image` (a path, PIL image, uint8 HxWx3 array or float array in
        [-1, 1]; sides multiples of 64).

        seed: fixes the noise (the conditioning noise is drawn first, then the latent noise, from
            numpy's default_rng(seed)); `latent_noise` (T, 4, H/8, W/8) and `cond_noise`
            (1, 3, H, W) replace those draws.
        callback(StepInfo): called after every sampling step and decoded chunk; returning False
            stops the run with GenerationCancelled.
        output_type: 'video', or 'latent' to stop after sampling (decode later with `decode_latents`).
        elevations_deg, azimuths_deg: the camera path of an sv3d_p model (see sv3d.camera_path).
        sampler_noise: float32 (K, T, 4, H/8, W/8), the K noise draws the sampler makes, in
            upstream's order (its torch.randn_like calls); default: drawn from the seed after the
            conditioning and latent noise.
        video: video-to-video: the input clip, a path or T frames (uint8 (T, H, W, 3) or float
            (T, 3, H, W) in [-1, 1]); it is encoded, noised `strength` of the way up the schedule
            and sampled back. `image` is then optional: the conditioning image, else the first frame.
        num_clips (an override) > 1 chains clips: clip k uses seed `clip_seed(seed, k)` and the last
            frame of clip k-1 (`chain_condition`) as its image; the result holds the joined video
            (num_clips * (T - 1) + 1 frames) and the latents of every clip (num_clips, T, 4, h, w).
            clip_callback(ClipResult) runs after each clip; `finished_clips` (those results, for
            clips 0..m-1 of the same chain and seed) resume the chain at clip m.
        overrides: per-call values for the sampling fields of SVDParams (num_frames, num_steps, fps,
            motion_bucket_id, noise_aug_strength, decode_chunk_size, num_clips, strength).
        """
        if output_type not in ("video", "latent"):
            raise InputError(f"output_type must be 'video' or 'latent', got {output_type!r}")
        params = self.call_params(**overrides)
        sizes = self.resolve(params)
        chained = params.num_clips > 1 or finished_clips is not None or clip_callback is not None
        if video is None and params.strength is not None:
            raise ParamError("strength", "strength applies to video-to-video only: give a video")
        if video is not None:
            self._require_motion_conditioning("video-to-video")
        if chained:
            self._require_motion_conditioning("chained clips")
            if video is not None:
                raise InputError("chained clips (num_clips > 1) start from an image; video-to-video makes one clip")
            if output_type != "video":
                raise InputError("chained clips need their frames (each clip starts from the previous one's last "
                                 "frame): output_type must be 'video'")
            if latent_noise is not None or cond_noise is not None or sampler_noise is not None:
                raise InputError("latent_noise, cond_noise and sampler_noise fix one clip's noise; a chain draws each clip's "
                                 "noise from its seed")
            return self._generate_chain(image, seed, params, sizes, progress, callback, finished_clips,
                                        clip_callback)
        camera = sv3d.resolve_camera(self.input_keys, sizes["num_frames"], elevations_deg, azimuths_deg)
        return self._generate_clip(image, seed, params, sizes, latent_noise, cond_noise, progress, callback,
                                   output_type, video, camera=camera, sampler_noise=sampler_noise)

    def _require_motion_conditioning(self, feature: str) -> None:
        keys = set(self.engine.conditioner.input_keys)
        missing = [k for k in MOTION_KEYS if k not in keys]
        if missing:
            raise ConfigError(f"{feature} keeps fps and motion from clip to clip, but config {self.params.config!r} "
                              f"is not conditioned on {', '.join(missing)} (an SV3D-style model?); refused")

    def _generate_clip(self, image, seed, params: SVDParams, sizes: Dict[str, int], latent_noise, cond_noise,
                       progress: bool, callback, output_type: str, video=None, clip: Tuple[int, int] = (0, 1),
                       camera: Optional[Dict[str, np.ndarray]] = None, sampler_noise=None):
        start = time.perf_counter()
        t, num_steps = sizes["num_frames"], sizes["num_steps"]
        source = None
        if video is not None:
            source = video_to_array(load_video(os.fspath(video), t)[0] if isinstance(video, (str, os.PathLike))
                                    else video)
            if source.shape[0] != t:
                raise InputError(f"the input video has {source.shape[0]} frames where the clip has {t} "
                                 f"(num_frames); resample it first (svd_ms.media.load_video does)")
            if image is None:
                image = source[:1]
        if image is None:
            raise InputError("an image is required (or a video, whose first frame conditions it)")
        image = image_to_array(image)
        _, _, h, w = image.shape
        if h % self.size_multiple or w % self.size_multiple:
            raise InputError(f"image height and width must be multiples of {self.size_multiple}, got {h}x{w}")
        if source is not None and source.shape[2:] != (h, w):
            raise InputError(f"the input video is {source.shape[3]}x{source.shape[2]} but the conditioning image is "
                             f"{w}x{h}; they must match")
        self.check_memory(t, h, w, sizes["decode_chunk_size"], params)
        rng = np.random.default_rng(seed)
        if cond_noise is None:
            cond_noise = rng.standard_normal(image.shape).astype(np.float32)
        if latent_noise is None:
            latent_noise = rng.standard_normal((t, 4, h // 8, w // 8)).astype(np.float32)
        cond_noise = np.asarray(cond_noise, np.float32)
        latent_noise = np.asarray(latent_noise, np.float32)
        if latent_noise.shape != (t, 4, h // 8, w // 8):
            raise InputError(f"latent_noise must have shape {(t, 4, h // 8, w // 8)}, got {latent_noise.shape}")
        if cond_noise.shape != image.shape:
            raise InputError(f"cond_noise must have shape {image.shape}, got {cond_noise.shape}")
        noise = sampling.noise_from_rng(rng)
        if sampler_noise is not None:
            sampler = self.sampling_for(t, params).sampler
            draws = (sampler.num_noise_draws(num_steps),) + latent_noise.shape
            sampler_noise = np.asarray(sampler_noise, np.float32)
            if sampler_noise.shape != draws:
                raise InputError(f"sampler_noise must have shape {draws} for this sampler, got {sampler_noise.shape}")
            noise = sampling.noise_from_draws(sampler_noise)
        start_index, clean = 0, None
        if source is not None:
            strength = DEFAULT_STRENGTH if params.strength is None else params.strength
            start_index = video_to_video_start(num_steps, strength)
        label = f"clip {clip[0] + 1}/{clip[1]} " if clip[1] > 1 else ""
        bars = _ProgressBars(progress, num_steps - start_index, -(-t // sizes["decode_chunk_size"]), label)
        try:
            def report(info: StepInfo):
                info.clip = clip[0]
                bars.update(info.stage)
                return callback(info) if callback is not None else None

            if start_index > 0:  # strength 1 starts from pure noise: the input's content is not used
                clean = self.encode_video(source, sizes["decode_chunk_size"])
            t_encode = time.perf_counter()
            c, uc = self.conditioning(image, cond_noise, camera, params)
            t_cond = time.perf_counter()
            z, step_times = self.sample_latents(c, uc, latent_noise, noise, num_steps, report, start_index, clean,
                                                params)
            t_sample = time.perf_counter()
            result = VideoResult(latents=z.asnumpy(), seed=seed, params=params, camera=camera)
            if output_type == "video":
                result.decoded, result.video = self.decode_latents(z, sizes["decode_chunk_size"], report)
                result.frames = result.decoded
                if self.orbit:
                    # The orbit ends where it started: upstream shows the input itself as the last view.
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

    def _generate_chain(self, image, seed, params: SVDParams, sizes: Dict[str, int], progress: bool, callback,
                        finished_clips, clip_callback) -> VideoResult:
        start = time.perf_counter()
        if image is None:
            raise InputError("chained clips need an image to start from")
        if seed is None:
            if finished_clips:
                raise InputError("finished_clips resume a chain: give the seed it was started with")
            seed = int(np.random.default_rng().integers(0, 2**32))
        image = image_to_array(image)
        clips = self._check_finished_clips(list(finished_clips or []), seed, params.num_clips, image,
                                           sizes["num_frames"])
        # Earlier clips stay on the host as numpy: the device holds one clip at a time.
        frames = [c.frames for c in clips]
        latents = [c.latents for c in clips]
        condition = image if not clips else chain_condition(clips[-1].frames)
        made: List[ClipResult] = []
        for k in range(len(clips), params.num_clips):
            result = self._generate_clip(condition, clip_seed(seed, k), params, sizes, None, None, progress,
                                         callback, "video", clip=(k, params.num_clips))
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
                          seed=seed, params=params)
        steps = [x for c in made for x in c.timings["step_s"]]
        out.timings = {
            "clips": [c.timings for c in made],
            "clips_resumed": len(clips),
            "conditioning_s": sum(c.timings["conditioning_s"] for c in made),
            "compile_s": made[0].timings["compile_s"] if made else 0.0,
            "step_s": steps,
            "sampling_s": sum(c.timings["sampling_s"] for c in made),
            "decode_s": sum(c.timings["decode_s"] for c in made),
            "total_s": time.perf_counter() - start,
        }
        return out

    @staticmethod
    def _check_finished_clips(clips: List[ClipResult], seed: int, num_clips: int, image: np.ndarray,
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

    def generate_many(self, image, num_videos: int, seed: Optional[int] = None, **kwargs) -> List[VideoResult]:
        """`num_videos` videos of one image, video i with seed `seed + i` (each equal to a separate
        `generate` call with that seed). Without a seed, one is drawn and recorded in each result."""
        if not isinstance(num_videos, int) or isinstance(num_videos, bool) or num_videos < 1:
            raise ParamError("num_videos", f"num_videos={num_videos!r} must be an integer >= 1")
        if seed is None:
            seed = int(np.random.default_rng().integers(0, 2**32 - num_videos))
        image = image_to_array(image)
        return [self.generate(image, seed + i, **kwargs) for i in range(num_videos)]


def _notify(callback, info: StepInfo) -> None:
    if callback is not None and callback(info) is False:
        raise GenerationCancelled(f"stopped by the step callback during {info.stage} "
                                  f"({info.index + 1}/{info.total})")


class _ProgressBars:
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
