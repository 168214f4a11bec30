"""SV4D 2.0 sampling: a video of an object -> the same video seen from V new views.

As upstream's `simple_video_sample_4d2.py` does it: the input frames are framed around the
object; chunks of T frames are sampled with all V views together (T*V latents, t-major); a
later chunk is conditioned on the views an earlier chunk made at its first frame; every chunk
is decoded and written into its frames. The chunk schedule (`svd_ms.sv4d2.chunk_starts`) also
covers the inputs upstream fails on or cuts short.

    pipe = SV4D2Pipeline("configs/sv4d2.yaml", "sv4d2.safetensors")
    result = pipe("object.mp4", seed=23)
    result.views  # uint8 (V, N, H, W, 3)
"""
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn, ops

from .. import sv4d2
from ..errors import InputError
from ..policy import resolve_amp_level
from ..runtime.budget import available_host_bytes, check_fits, estimate_generation_bytes
from ..seeds import noise_generator, resolve_seed
from ..util import instantiate_from_config, load_config

FORCE_UC_ZERO = ["cond_frames", "cond_frames_without_noise", "cond_view", "cond_motion"]
# The embedders that draw frame noise, in the order upstream draws it, then the initial latents.
NOISE_KEYS = ("cond_frames", "cond_view", "cond_motion", "latents")
LATENT_CHANNELS, VAE_FACTOR = 4, 8


class SV4D2DenoiserStep(nn.Cell):
    """One guided evaluation: (uc, c) copies, EDM preconditioning, the UNet with the view
    conditioning, the guider's blend. Graph mode compiles it once for every step and chunk."""

    def __init__(self, engine, guider):
        super().__init__(auto_prefix=False)
        self.unet = engine.model.diffusion_model
        self.scaling = engine.denoiser.scaling
        self.guider = guider

    def construct(self, x, sigma, concat, crossattn, vector, cond_view, num_video_frames):
        x = ops.cast(x, ms.float32)
        x_in = ops.cat([x, x], axis=0)
        sigma_in = ops.broadcast_to(ops.cast(sigma, ms.float32).reshape(1), (x_in.shape[0],))
        c_skip, c_out, c_in, c_noise = self.scaling(sigma_in.reshape(-1, 1, 1, 1))
        net_in = ops.cat((x_in * c_in, ops.cast(concat, ms.float32)), axis=1)
        out = self.unet(net_in, c_noise.reshape(-1), crossattn, vector, cond_view, num_video_frames)
        return self.guider(ops.cast(out, ms.float32) * c_out + x_in * c_skip, sigma)


@dataclass
class SV4D2Chunk:
    """One sampled chunk: its frames, its final latents and decoded frames (in [-1, 1] before
    clamping), and with `keep_intermediates` the conditioning and every step."""
    start: int
    frames: List[int]
    latents: np.ndarray
    decoded: np.ndarray
    intermediates: Dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class SV4D2Result:
    views: np.ndarray          # uint8 (V, N, H, W, 3): the new views, frame by frame
    input_frames: np.ndarray   # uint8 (N, H, W, 3): the framed input (view 0)
    angles: Dict[str, np.ndarray]
    chunks: List[SV4D2Chunk]
    seed: Optional[int]
    settings: Dict

    def grid(self) -> np.ndarray:
        """uint8 (N, H, (V + 1) W, 3): the input and every view side by side."""
        return np.concatenate([self.input_frames] + list(self.views), axis=2)


class SV4D2Pipeline:
    """SV4D 2.0 from a config (upstream `sv4d2.yaml` / `sv4d2_8views.yaml` or a tiny one of the
    same layout) and its checkpoint. `amp_level` 'O2' runs the UNet and the image tower in float16
    with the float32 islands of `svd_ms.policy`; 'auto' (the default) is the device's level, O2 on
    Ascend and O0 elsewhere, as for the SVD pipelines."""

    def __init__(self, config, weights: Optional[str] = None, amp_level: str = "auto"):
        """weights: an upstream .safetensors or a converted .ckpt; None: random weights."""
        from ..checkpoint import load_checkpoint_into
        from ..precision import apply_precision
        cfg = load_config(config, require_model=True)
        self.chunk_frames, self.num_views = sv4d2.chunk_layout(cfg)
        self.entry = sv4d2.script_entry(self.num_views)
        self.engine = instantiate_from_config(cfg.model)
        if type(self.engine.model.diffusion_model).__name__ != "SpatialUNetModelWithTime":
            raise InputError("this config's network is not SV4D 2.0's SpatialUNetModelWithTime")
        if weights is not None:
            load_checkpoint_into(self.engine, weights)
        else:  # an untrained model (demos, memory and speed checks)
            from ..weights import randomize
            randomize(self.engine, seed=0)
        self.weights = weights
        self.precision_decisions = apply_precision(self.engine, amp_level)
        self.amp_level = resolve_amp_level(amp_level)  # the level that ran, for the record
        self.model_channels = self.engine.model.diffusion_model.model_channels
        self._steps = {}

    # ---- checks ------------------------------------------------------------------------------
    def memory_estimate(self, size: int, decoding_t: int) -> Dict[str, int]:
        """Bytes one chunk needs beyond the weights: T*V latents through the UNet twice (uc, c)."""
        return estimate_generation_bytes(self.chunk_frames * self.num_views, size, size, decoding_t,
                                         model_channels=self.model_channels)

    def _step(self, cfg: Optional[float]) -> SV4D2DenoiserStep:
        key = cfg
        if key not in self._steps:
            guider = instantiate_from_config(sv4d2.guider_config(self.entry, self.chunk_frames, self.num_views, cfg))
            self._steps[key] = SV4D2DenoiserStep(self.engine, guider)
        return self._steps[key]

    # ---- sampling ----------------------------------------------------------------------------
    def __call__(self, frames, num_steps: int = sv4d2.NUM_STEPS, seed: Optional[int] = None, noise=None,
                 elevations_deg=None, azimuths_deg=None, size: int = sv4d2.IMAGE_SIZE,
                 image_frame_ratio: Optional[float] = sv4d2.IMAGE_FRAME_RATIO, keep_background: bool = False,
                 max_frames: Optional[int] = None, encoding_t: int = sv4d2.ENCODING_T,
                 decoding_t: int = sv4d2.DECODING_T, cfg: Optional[float] = None,
                 keep_intermediates: bool = False, check_memory: bool = True) -> SV4D2Result:
        """frames: a video path, a folder of frames, a list of images or a uint8 array (see
        sv4d2.read_frames); any number of frames. noise: None (drawn from `seed`), or one dict
        per chunk with the frame noise of the `cond_frames`, `cond_view`, `cond_motion` embedders
        and the initial `latents` (upstream's draws, to reproduce a recorded run)."""
        for name, value in (("num_steps", num_steps), ("encoding_t", encoding_t), ("decoding_t", decoding_t)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"{name} must be a positive integer, got {value!r}")
        if cfg is not None and (isinstance(cfg, bool) or not isinstance(cfg, (int, float)) or cfg < 1):
            raise InputError(f"cfg must be a number >= 1, got {cfg!r}")
        angles = sv4d2.view_angles(self.num_views, self.entry, elevations_deg, azimuths_deg)
        processed = sv4d2.preprocess_frames(sv4d2.read_frames(frames, max_frames), size, image_frame_ratio,
                                            keep_background)
        if check_memory:
            check_fits(self.memory_estimate(size, decoding_t), available_host_bytes(),
                       f"SV4D 2.0 at {size}x{size} ({self.chunk_frames} frames x {self.num_views} views a chunk)")
        n = len(processed)
        padded = sv4d2.pad_to_chunk(processed, self.chunk_frames)
        starts = sv4d2.chunk_starts(len(padded), self.chunk_frames)
        if noise is not None and seed is not None:
            raise InputError("give seed or noise (recorded draws), not both")
        if noise is not None and len(noise) != len(starts):
            raise InputError(f"noise: {len(starts)} chunks need {len(starts)} sets of draws, got {len(noise)}")
        seed = None if noise is not None else resolve_seed(seed)
        rng = noise_generator(seed) if noise is None else None
        for embedder in self.engine.conditioner.embedders:
            if getattr(embedder, "draws_noise", False):
                embedder.en_and_decode_n_samples_a_time = encoding_t
        step = self._step(cfg)

        images = sv4d2.frames_to_model(padded)
        made = np.zeros((len(padded), self.num_views) + images.shape[1:], np.float32)  # views 1..V
        done = np.zeros(len(padded), bool)
        chunks = []
        for index, start in enumerate(starts):
            draws = noise[index] if noise is not None else rng
            chunk = self._sample_chunk(step, images, made, start, angles, draws, num_steps, decoding_t,
                                       keep_intermediates)
            chunks.append(chunk)
            views = np.clip((chunk.decoded + 1.0) / 2.0, 0.0, 1.0) * 2.0 - 1.0
            made[chunk.frames] = views.reshape((self.chunk_frames, self.num_views) + views.shape[1:])
            done[chunk.frames] = True
        if not done.all():
            raise RuntimeError("the chunk schedule left frames out")
        videos = np.stack([sv4d2.to_video_uint8(made[:n, v]) for v in range(self.num_views)])
        settings = dict(num_steps=num_steps, size=size, image_frame_ratio=image_frame_ratio,
                        keep_background=keep_background, encoding_t=encoding_t, decoding_t=decoding_t,
                        cfg=self.entry.cfg if cfg is None else cfg, chunk_frames=self.chunk_frames,
                        num_views=self.num_views, amp_level=self.amp_level, chunk_starts=starts,
                        padded_frames=len(padded) - n)
        return SV4D2Result(videos, processed, angles, chunks, seed, settings)

    def _draw(self, draws, key: str, shape) -> np.ndarray:
        if isinstance(draws, np.random.Generator):
            return draws.standard_normal(shape).astype(np.float32)
        if key not in draws:
            raise InputError(f"noise: every chunk needs '{key}' (keys: {', '.join(NOISE_KEYS)})")
        value = np.asarray(draws[key], np.float32)
        if value.shape != tuple(shape):
            raise InputError(f"noise['{key}'] must have shape {tuple(shape)}, got {value.shape}")
        return value

    def _sample_chunk(self, step, images, made, start, angles, draws, num_steps, decoding_t, keep):
        t, v = self.chunk_frames, self.num_views
        frames = list(range(start, start + t))
        motion = images[frames]                       # (T, 3, H, W): the input view
        view = made[start]                            # (V, 3, H, W): zeros before any chunk made it
        polar, azimuth = sv4d2.chunk_camera(angles, t)
        batch = {"cond_frames_without_noise": motion, "cond_frames": np.repeat(motion, v, axis=0),
                 "polar_rad": polar, "azimuth_rad": azimuth, "cond_view": view, "cond_motion": motion}
        frame_noise = {k: self._draw(draws, k, batch[k].shape) for k in NOISE_KEYS[:3]}
        conditioner = self.engine.conditioner
        c, uc = conditioner.get_unconditional_conditioning(batch, force_uc_zero_embeddings=FORCE_UC_ZERO,
                                                           noise=frame_noise)
        intermediates = {f"{p}_{k}": d[k] for p, d in (("c", c), ("uc", uc)) for k in d} if keep else {}
        if start == 0:  # no view of this frame is made yet: upstream zeroes the view latents
            c["cond_view"], uc["cond_view"] = ops.zeros_like(c["cond_view"]), ops.zeros_like(uc["cond_view"])
        joint = step.guider.prepare_cond(c, uc)
        h, w = images.shape[2] // VAE_FACTOR, images.shape[3] // VAE_FACTOR
        randn = Tensor(self._draw(draws, "latents", (t * v, LATENT_CHANNELS, h, w)))
        record = {"step_x": [], "step_denoised": []}

        def denoise(x, sigma):
            out = step(x, Tensor(np.float32(sigma)), joint["concat"], joint["crossattn"], joint["vector"],
                       joint["cond_view"], t * v)
            if keep:
                record["step_x"].append(x.asnumpy())
                record["step_denoised"].append(out.asnumpy())
            return out

        sampler = self._sampler(step, num_steps)
        latents = sampler(denoise, randn, num_steps=num_steps)
        decoded = self.engine.decode_first_stage(latents, chunk_size=decoding_t).asnumpy()
        if keep:
            intermediates = {k: val.asnumpy() for k, val in intermediates.items()}
            intermediates["sampler_c_cond_view"] = c["cond_view"].asnumpy()
            intermediates["sampler_uc_cond_view"] = uc["cond_view"].asnumpy()
            intermediates.update({k: np.stack(val) for k, val in record.items()})
            intermediates["sigmas"] = np.asarray(sampler.sigmas(num_steps), np.float32)
            intermediates["polar_rad"], intermediates["azimuth_rad"] = polar, azimuth
        return SV4D2Chunk(start, frames, latents.asnumpy(), decoded, intermediates)

    def _sampler(self, step, num_steps):
        from ..modules.diffusionmodules.sampling import EulerEDMSampler
        discretization = {"target": "svd_ms.modules.diffusionmodules.discretizer.EDMDiscretization",
                          "params": {"sigma_min": sv4d2.SIGMA_MIN, "sigma_max": sv4d2.SIGMA_MAX, "rho": sv4d2.RHO}}
        sampler = EulerEDMSampler(s_churn=0.0, s_tmin=0.0, s_tmax=999.0, s_noise=1.0, num_steps=num_steps,
                                  discretization_config=discretization)
        sampler.guider = step.guider
        return sampler
