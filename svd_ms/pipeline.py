"""Image-to-video inference: `SVDInferPipeline(config, checkpoint, ...).generate(image)`.

Does what upstream's sampling script does: conditioner (with zeroed image embeddings for the
unconditional branch), sampling with the guider, chunked decoding, clamping. The model is built
once; the sampling settings (frames, steps, fps, motion, noise augmentation, decode chunk) can
change from call to call.
"""
import copy
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Union

import mindspore as ms
import numpy as np
from mindspore import Tensor, ops
from omegaconf import OmegaConf

from . import sv3d
from .checkpoint import load_checkpoint_into
from .errors import ConfigError, GenerationCancelled, InputError, NonFiniteError, ParamError
from .media import image_to_array
from .models.diffusion import GuidedDenoiserStep
from .params import MODEL_FIELDS, SVDParams
from .precision import apply_precision
from .runtime.budget import available_host_bytes, check_fits, estimate_generation_bytes
from .util import instantiate_from_config, load_config

DEFAULT_NUM_FRAMES = 14
DEFAULT_NUM_STEPS = 25
DEFAULT_NOISE_AUG_STRENGTH = 0.02
UNCOND_ZERO_KEYS = ["cond_frames", "cond_frames_without_noise"]


@dataclass
class StepInfo:
    """What a step callback sees. `stage` is 'sampling' (one call per sampler step, with the
    step's sigma and the latents after it) or 'decoding' (one call per decoded chunk)."""
    stage: str
    index: int
    total: int
    sigma: Optional[float] = None
    latents: Optional[Tensor] = None


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


def _check_finite(x, stage: str):
    if not bool(ops.isfinite(x).all()):
        raise NonFiniteError(f"non-finite values (NaN/inf) in {stage}; stopping instead of writing a broken video")


class _Sampling:
    """The sampler, guider and compiled denoiser step for one clip length (per-frame guiders are
    sized to the clip, as upstream's sampling script does)."""

    def __init__(self, engine, sampler_config: Dict, num_frames: int):
        config = copy.deepcopy(sampler_config)
        guider_params = ((config.get("params") or {}).get("guider_config") or {}).get("params")
        if guider_params and "max_scale" in guider_params:
            guider_params["num_frames"] = num_frames
        self.sampler = instantiate_from_config(config)
        self.guider = self.sampler.guider
        self.denoiser_step = GuidedDenoiserStep(engine, self.guider)


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
        cfg = load_config(params.config, require_model=True)
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
        self._sampling: Dict[int, _Sampling] = {}
        default = self.sampling_for(self.num_frames)
        self.sampler, self.guider, self.denoiser_step = default.sampler, default.guider, default.denoiser_step

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
        return {"num_frames": t, "num_steps": params.num_steps or self.default_num_steps,
                "decode_chunk_size": params.decode_chunk_size or t,
                "noise_aug_strength": self.default_noise_aug_strength if aug is None else aug}

    def call_params(self, **overrides) -> SVDParams:
        """This pipeline's parameters with per-call `overrides`, validated; the model fields
        (config, checkpoint, precision, attention) cannot change without a new pipeline."""
        fixed = sorted(set(overrides) & set(MODEL_FIELDS))
        if any(overrides[k] != getattr(self.params, k) for k in fixed):
            raise ParamError(fixed[0], f"{', '.join(fixed)} cannot change per call; build a new pipeline")
        return self.params.replace(**overrides) if overrides else self.params

    def check_memory(self, num_frames: int, height: int, width: int, decode_chunk_size: int) -> None:
        """Refuse, before allocating anything, a run the host cannot hold (see runtime.budget)."""
        channels = int(self.engine.model.diffusion_model.model_channels)
        estimate = estimate_generation_bytes(num_frames, height, width, min(decode_chunk_size, num_frames),
                                             channels, self.sampling_for(num_frames).guider.num_copies)
        check_fits(estimate, available_host_bytes(), f"{num_frames} frames of {width}x{height}")

    def sampling_for(self, num_frames: int) -> _Sampling:
        if num_frames not in self._sampling:
            self._sampling[num_frames] = _Sampling(self.engine, self._sampler_config, num_frames)
        return self._sampling[num_frames]

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
    def sample_latents(self, c, uc, latent_noise: np.ndarray, rng: np.random.Generator, num_steps: int,
                       callback: Optional[Callable] = None):
        """Sampled latents and the wall time of each step."""
        t = latent_noise.shape[0]
        parts = self.sampling_for(t)
        cond = parts.guider.prepare_cond(c, uc)
        ioi = Tensor(np.zeros((parts.guider.num_copies, t), np.float32))
        concat, crossattn, vector = cond.get("concat"), cond.get("crossattn"), cond.get("vector")
        sigmas = parts.sampler.sigmas(num_steps)
        step_times: List[float] = []
        last = [time.perf_counter()]

        def denoise(x, sigma):
            return parts.denoiser_step(x, Tensor([sigma], ms.float32), concat, crossattn, vector, ioi, t)

        def on_step(i, x, denoised):
            _check_finite(x, f"latents after sampling step {i + 1}/{num_steps}")
            now = time.perf_counter()
            step_times.append(now - last[0])
            last[0] = now
            _notify(callback, StepInfo("sampling", i, num_steps, float(sigmas[i + 1]), x))

        z = parts.sampler(denoise, Tensor(latent_noise), num_steps, rng, on_step)
        return z, step_times

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

    def generate(self, image, seed: Optional[int] = None, latent_noise=None, cond_noise=None,
                 progress: bool = False, callback: Optional[Callable[[StepInfo], Optional[bool]]] = None,
                 output_type: str = "video", elevations_deg=None, azimuths_deg=None, **overrides) -> VideoResult:
        """Generate one video from `image` (a path, PIL image, uint8 HxWx3 array or float array in
        [-1, 1]; sides multiples of 64).

        seed: fixes the noise (the conditioning noise is drawn first, then the latent noise, from
            numpy's default_rng(seed)); `latent_noise` (T, 4, H/8, W/8) and `cond_noise`
            (1, 3, H, W) replace those draws.
        callback(StepInfo): called after every sampling step and decoded chunk; returning False
            stops the run with GenerationCancelled.
        output_type: 'video', or 'latent' to stop after sampling (decode later with `decode_latents`).
        elevations_deg, azimuths_deg: the camera path of an sv3d_p model (see sv3d.camera_path).
        overrides: per-call values for the sampling fields of SVDParams (num_frames, num_steps, fps,
            motion_bucket_id, noise_aug_strength, decode_chunk_size).
        """
        if output_type not in ("video", "latent"):
            raise InputError(f"output_type must be 'video' or 'latent', got {output_type!r}")
        start = time.perf_counter()
        params = self.call_params(**overrides)
        sizes = self.resolve(params)
        t, num_steps = sizes["num_frames"], sizes["num_steps"]
        camera = sv3d.resolve_camera(self.input_keys, t, elevations_deg, azimuths_deg)
        image = image_to_array(image)
        _, _, h, w = image.shape
        if h % 64 or w % 64:
            raise InputError(f"image height and width must be multiples of 64, got {h}x{w}")
        self.check_memory(t, h, w, sizes["decode_chunk_size"])
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

        bars = _ProgressBars(progress, num_steps, -(-t // sizes["decode_chunk_size"]))
        try:
            def report(info: StepInfo):
                bars.update(info.stage)
                return callback(info) if callback is not None else None

            c, uc = self.conditioning(image, cond_noise, camera, params)
            t_cond = time.perf_counter()
            z, step_times = self.sample_latents(c, uc, latent_noise, rng, num_steps, report)
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
            "conditioning_s": t_cond - start,
            "compile_s": max(step_times[0] - steady, 0.0),
            "step_s": step_times,
            "sampling_s": t_sample - t_cond,
            "decode_s": end - t_sample if output_type == "video" else None,
            "total_s": end - start,
        }
        return result

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

    def __init__(self, enabled: bool, steps: int, chunks: int):
        self.bars = {}
        if enabled:
            from tqdm import tqdm
            self.bars = {"sampling": tqdm(total=steps, desc="sampling", unit="step"),
                         "decoding": tqdm(total=chunks, desc="decoding", unit="chunk")}

    def update(self, stage: str):
        if stage in self.bars:
            self.bars[stage].update(1)

    def close(self):
        for bar in self.bars.values():
            bar.close()
