"""Image-to-video inference: `SVDInferPipeline(config, checkpoint, ...)(image) -> video`.

Does what upstream's sampling script does: conditioner (with zeroed image embeddings for the
unconditional branch), EDM Euler sampling with the guider, chunked decoding, clamping.
"""
import os
import time
from typing import Callable, Dict, Optional, Union

import mindspore as ms
import numpy as np
from mindspore import Tensor, ops
from omegaconf import OmegaConf

from . import policy
from .checkpoint import load_checkpoint_into
from .errors import ConfigError, InputError, NonFiniteError
from .models.diffusion import GuidedDenoiserStep
from .modules.diffusionmodules import guiders, sampling
from .util import instantiate_from_config

DEFAULT_NUM_FRAMES = 14
DEFAULT_NUM_STEPS = 25
UNCOND_ZERO_KEYS = ["cond_frames", "cond_frames_without_noise"]


def load_config(config: Union[str, Dict]):
    if isinstance(config, str):
        if not os.path.isfile(config):
            raise ConfigError(f"config '{config}' does not exist")
        try:
            return OmegaConf.load(config)
        except Exception as exc:
            raise ConfigError(f"config '{config}' is not valid YAML ({str(exc).splitlines()[0]})") from None
    return OmegaConf.create(config)


def image_to_array(image) -> np.ndarray:
    """Path, PIL image, uint8 HWC array or float array in [-1, 1] -> float32 (1, 3, H, W) in [-1, 1]."""
    if isinstance(image, (str, os.PathLike)):
        from PIL import Image, ImageOps
        try:
            with Image.open(image) as im:
                image = ImageOps.exif_transpose(im).convert("RGB")
        except FileNotFoundError:
            raise InputError(f"image '{image}' does not exist") from None
        except Exception as exc:
            raise InputError(f"image '{image}' cannot be read ({exc})") from None
    if hasattr(image, "convert") and hasattr(image, "size"):
        image = np.asarray(image.convert("RGB"))
    array = np.asarray(image)
    if array.dtype == np.uint8:
        if array.ndim != 3 or array.shape[2] != 3:
            raise InputError(f"uint8 image must be HxWx3, got shape {array.shape}")
        array = array.astype(np.float32).transpose(2, 0, 1)[None] / 127.5 - 1.0
    else:
        array = array.astype(np.float32)
        if array.ndim == 3:
            array = array[None]
        if array.ndim != 4 or array.shape[:2] != (1, 3):
            raise InputError(f"float image must be (1, 3, H, W) or (3, H, W), got shape {array.shape}")
    return np.ascontiguousarray(array, np.float32)


def _check_finite(x, stage: str):
    if not bool(ops.isfinite(x).all()):
        raise NonFiniteError(f"non-finite values (NaN/inf) in {stage}; stopping instead of writing a broken video")


class SVDInferPipeline:
    """Stable Video Diffusion, image to video.

    Args:
        config: sgm-style YAML (upstream `sgm.` targets work unchanged).
        checkpoint: converted MindSpore `.ckpt` or upstream `.safetensors`; None gives random
            weights (an untrained demo).
        num_frames: frames to generate (default: the config's guider num_frames, else 14).
        fps: frames per second the model is conditioned on (fps_id = fps - 1), 1 to 60.
        motion_bucket_id: amount of motion, 0 to 255.
        noise_aug_strength: noise added to the conditioning frame (cond_aug).
        decode_chunk_size: frames decoded at once by the VAE (default: all frames). Smaller uses
            less memory; the temporal decoder only mixes frames within a chunk.
        num_steps: sampling steps (default: the config's, else 25).
        amp_level: "O0" float32 everywhere, "O2" float16 with float32 islands (see README).
        attention: "auto" (flash on Ascend, math elsewhere), "math" or "flash".
        ff_chunk_size: tokens per feed-forward chunk in the UNet transformers (None: no chunking).
    """

    def __init__(self, config: str, checkpoint: Optional[str] = None, num_frames: Optional[int] = None,
                 fps: int = 7, motion_bucket_id: int = 127, noise_aug_strength: float = 0.02,
                 decode_chunk_size: Optional[int] = None, num_steps: Optional[int] = None, amp_level: str = "O0",
                 attention: str = "auto", ff_chunk_size: Optional[int] = None):
        if num_frames is not None and num_frames < 1:
            raise InputError(f"num_frames must be at least 1, got {num_frames}")
        if decode_chunk_size is not None and decode_chunk_size < 1:
            raise InputError(f"decode_chunk_size must be at least 1, got {decode_chunk_size}")
        if num_steps is not None and num_steps < 1:
            raise InputError(f"num_steps must be at least 1, got {num_steps}")
        if not 1 <= fps <= 60:
            raise InputError(f"fps must be between 1 and 60, got {fps}")
        if not 0 <= motion_bucket_id <= 255:
            raise InputError(f"motion_bucket_id must be between 0 and 255, got {motion_bucket_id}")
        if noise_aug_strength < 0:
            raise InputError(f"noise_aug_strength must be >= 0, got {noise_aug_strength}")
        if amp_level not in policy.AMP_LEVELS:
            raise InputError(f"amp_level must be one of {policy.AMP_LEVELS}, got '{amp_level}'")
        if attention not in policy.ATTENTION_CHOICES:
            raise InputError(f"attention must be one of {policy.ATTENTION_CHOICES}, got '{attention}'")
        if ff_chunk_size is not None and ff_chunk_size < 1:
            raise InputError(f"ff_chunk_size must be at least 1, got {ff_chunk_size}")
        if checkpoint is not None and not os.path.isfile(checkpoint):
            from .errors import CheckpointError
            raise CheckpointError(f"checkpoint '{checkpoint}' does not exist")

        cfg = load_config(config)
        model_params = cfg.model.params
        guider_params = model_params.sampler_config.params.guider_config.get("params", None)
        self.num_frames = int(num_frames or (guider_params or {}).get("num_frames", None) or DEFAULT_NUM_FRAMES)
        self.num_steps = int(num_steps or model_params.sampler_config.params.get("num_steps", None)
                             or DEFAULT_NUM_STEPS)
        if guider_params is not None and "max_scale" in guider_params:
            # Per-frame guiders are sized to the clip, as upstream's sampling script does.
            guider_params.num_frames = self.num_frames
        network_params = model_params.network_config.params
        network_params.attention = attention
        network_params.ff_chunk_size = ff_chunk_size
        # The VAE halves the size 3 times, each UNet level but the last once more.
        self.size_multiple = 8 * 2 ** (len(network_params.get("channel_mult", [1, 2, 4, 4])) - 1)

        self.fps = fps
        self.motion_bucket_id = motion_bucket_id
        self.noise_aug_strength = noise_aug_strength
        self.decode_chunk_size = decode_chunk_size or self.num_frames
        self.amp_level = amp_level
        self.attention = attention
        self.config_path = config if isinstance(config, str) else None
        self.checkpoint = checkpoint

        self.engine = instantiate_from_config(cfg.model)
        self.engine.set_train(False)
        if checkpoint is None:
            from .weights import randomize
            randomize(self.engine, seed=0)
            self.weights_info = {"random": True}
        else:
            self.weights_info = load_checkpoint_into(self.engine, checkpoint)
        self.precision_decisions = policy.apply_precision(self.engine, amp_level)
        self.sampler = self.engine.sampler
        self.guider = guiders.skip_unused_copies(self.sampler.guider)
        self.denoiser_step = GuidedDenoiserStep(self.engine, self.guider)
        # One compiled step per way of combining the copies; keeping them also keeps MindSpore's
        # graph caches from meeting a reused object id.
        self._denoiser_steps = {self.guider.combination_key(): self.denoiser_step}
        self.last_timings: Dict[str, object] = {}

    def use_sampler(self, sampler_config, num_steps: Optional[int] = None, skip_unused_copies: bool = True):
        """Replace sampler and guider (an sgm `sampler_config`) without rebuilding the model.
        `skip_unused_copies=False` keeps the unconditional batch even where guidance is 1."""
        config = OmegaConf.create(OmegaConf.to_container(OmegaConf.create(sampler_config)))
        guider_params = (config.params.get("guider_config", None) or {}).get("params", None)
        if guider_params is not None and "max_scale" in guider_params:
            guider_params.num_frames = self.num_frames
        self.sampler = self.engine.sampler = instantiate_from_config(config)
        self.num_steps = int(num_steps or config.params.get("num_steps", None) or self.num_steps)
        guider = self.sampler.guider
        guider = guiders.skip_unused_copies(guider) if skip_unused_copies else guider
        key = guider.combination_key()
        if key not in self._denoiser_steps:
            self._denoiser_steps[key] = GuidedDenoiserStep(self.engine, guider)
        self.denoiser_step = self._denoiser_steps[key]
        self.guider = self.denoiser_step.guider

    # ---- conditioning -------------------------------------------------------------------
    def _batch(self, image: np.ndarray, cond_noise: np.ndarray) -> Dict:
        t = self.num_frames
        values = {
            "cond_frames_without_noise": Tensor(image),
            "cond_frames": Tensor(image + self.noise_aug_strength * cond_noise),
            "fps_id": Tensor(np.full((t,), self.fps - 1, np.float32)),
            "motion_bucket_id": Tensor(np.full((t,), self.motion_bucket_id, np.float32)),
            "cond_aug": Tensor(np.full((t,), self.noise_aug_strength, np.float32)),
        }
        missing = [k for k in self.engine.conditioner.input_keys if k not in values]
        if missing:
            raise ConfigError(f"the conditioner needs inputs this pipeline cannot provide: {missing}")
        return values

    def conditioning(self, image: np.ndarray, cond_noise: np.ndarray):
        """(c, uc) with crossattn and concat repeated to every frame, as the sampling script does."""
        batch = self._batch(image, cond_noise)
        c, uc = self.engine.conditioner.get_unconditional_conditioning(
            batch, batch_uc=dict(batch), force_uc_zero_embeddings=UNCOND_ZERO_KEYS)
        for cond in (c, uc):
            for key in ("crossattn", "concat"):
                if key in cond:
                    cond[key] = ops.repeat_interleave(cond[key], self.num_frames, 0)
        return c, uc

    # ---- sampling ------------------------------------------------------------------------
    def sample_latents(self, c, uc, latent_noise: np.ndarray, noise,
                       on_step: Optional[Callable] = None):
        cond = self.guider.prepare_cond(c, uc)
        ioi = Tensor(np.zeros((self.guider.num_copies, self.num_frames), np.float32))
        concat, crossattn, vector = cond.get("concat"), cond.get("crossattn"), cond.get("vector")
        step_times = []

        def denoise(x, sigma):
            return self.denoiser_step(x, Tensor([sigma], ms.float32), concat, crossattn, vector, ioi,
                                      self.num_frames)

        def callback(i, x, denoised):
            _check_finite(x, f"latents after sampling step {i + 1}/{self.num_steps}")
            now = time.perf_counter()
            step_times.append(now - callback.last)
            callback.last = now
            if on_step is not None:
                on_step(i)
        callback.last = time.perf_counter()
        z = self.sampler(denoise, Tensor(latent_noise), self.num_steps, noise, callback)
        return z, step_times

    def __call__(self, image, seed: Optional[int] = None, latent_noise=None, cond_noise=None, progress: bool = False,
                 sampler_noise=None):
        """Returns float32 (T, 3, H, W) in [0, 1]."""
        return self.generate(image, seed, latent_noise, cond_noise, progress, sampler_noise)["video"]

    def generate(self, image, seed: Optional[int] = None, latent_noise=None, cond_noise=None,
                 progress: bool = False, sampler_noise=None) -> Dict[str, np.ndarray]:
        """Like __call__, but also returns the intermediates: 'latents' (sampled, scaled) and
        'frames' (decoded, in [-1, 1] before clamping) next to 'video'.

        sampler_noise: float32 (K, T, 4, H/8, W/8), the K noise draws the sampler makes, in
        upstream's order (its torch.randn_like calls); default: drawn from the seed."""
        start = time.perf_counter()
        image = image_to_array(image)
        _, _, h, w = image.shape
        if h % self.size_multiple or w % self.size_multiple:
            raise InputError(f"image height and width must be multiples of {self.size_multiple}, got {h}x{w}")
        rng = np.random.default_rng(seed)
        t = self.num_frames
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
            draws = (self.sampler.num_noise_draws(self.num_steps),) + latent_noise.shape
            sampler_noise = np.asarray(sampler_noise, np.float32)
            if sampler_noise.shape != draws:
                raise InputError(f"sampler_noise must have shape {draws} for this sampler, got {sampler_noise.shape}")
            noise = sampling.noise_from_draws(sampler_noise)

        bars = _progress_bars(progress, self.num_steps, -(-t // self.decode_chunk_size))
        c, uc = self.conditioning(image, cond_noise)
        t_cond = time.perf_counter()
        z, step_times = self.sample_latents(c, uc, latent_noise, noise, on_step=lambda i: bars[0].update(1))
        t_sample = time.perf_counter()
        frames = self.engine.decode_first_stage(z, self.decode_chunk_size, callback=lambda i, x: bars[1].update(1))
        _check_finite(frames, "decoded frames")
        frames = frames.asnumpy().astype(np.float32)
        video = np.clip((frames + 1.0) / 2.0, 0.0, 1.0)
        end = time.perf_counter()
        for bar in bars:
            bar.close()
        steady = float(np.median(step_times[1:])) if len(step_times) > 1 else step_times[0]
        self.last_timings = {
            "conditioning_s": t_cond - start,
            "compile_s": max(step_times[0] - steady, 0.0),
            "step_s": step_times,
            "sampling_s": t_sample - t_cond,
            "decode_s": end - t_sample,
            "total_s": end - start,
        }
        return {"video": video, "latents": z.asnumpy(), "frames": frames}


class _NoBar:
    def update(self, n=1):
        pass

    def close(self):
        pass


def _progress_bars(enabled: bool, steps: int, chunks: int):
    if not enabled:
        return _NoBar(), _NoBar()
    from tqdm import tqdm
    return tqdm(total=steps, desc="sampling", unit="step"), tqdm(total=chunks, desc="decoding", unit="chunk")
