"""The diffusion engine: conditioner, denoiser, network, first stage and sampler, built from one
config (sgm.models.diffusion.DiffusionEngine)."""
from typing import Dict, Optional

import mindspore as ms
from mindspore import nn, ops

from ..util import instantiate_from_config

DEFAULT_WRAPPER = "svd_ms.modules.diffusionmodules.wrappers.OpenAIWrapper"


class DenoiserStep(nn.Cell):
    """One evaluation of the denoiser on the guider's copies batched together: precondition and
    run the UNet. This is the unit graph mode compiles, once per number of copies; the guider
    combines the copies after it, so a new guider or guidance scale does not recompile the UNet."""

    def __init__(self, engine: "DiffusionEngine", num_copies: int):
        super().__init__(auto_prefix=False)
        self.network = engine.model
        self.denoiser = engine.denoiser
        self.num_copies = num_copies

    def construct(self, x, sigma, concat, crossattn, vector, image_only_indicator, num_video_frames):
        x_in = ops.cat([x] * self.num_copies, axis=0) if self.num_copies > 1 else x
        sigma_in = ops.broadcast_to(ops.cast(sigma, ms.float32).reshape(1), (x_in.shape[0],))
        return self.denoiser(self.network, x_in, sigma_in, concat, crossattn, vector, image_only_indicator,
                             num_video_frames)


class GuidedDenoiserStep:
    """One guided evaluation: the denoiser step on the batched copies, then the guider's
    combination of them (each its own graph in graph mode)."""

    def __init__(self, denoise: DenoiserStep, guider):
        if denoise.num_copies != guider.num_copies:
            raise ValueError(f"a step over {denoise.num_copies} copies cannot serve a guider of {guider.num_copies}")
        self.denoise = denoise
        self.guider = guider
        self.num_copies = guider.num_copies

    def __call__(self, x, sigma, concat, crossattn, vector, image_only_indicator, num_video_frames):
        denoised = self.denoise(x, sigma, concat, crossattn, vector, image_only_indicator, num_video_frames)
        return self.guider(denoised, sigma)


class DiffusionEngine(nn.Cell):
    def __init__(self, network_config: Dict, denoiser_config: Dict, first_stage_config: Dict,
                 conditioner_config: Optional[Dict] = None, sampler_config: Optional[Dict] = None,
                 network_wrapper: Optional[str] = None, scale_factor: float = 1.0,
                 disable_first_stage_autocast: bool = False, en_and_decode_n_samples_a_time: Optional[int] = None,
                 loss_fn_config: Optional[Dict] = None, **ignored):
        super().__init__()
        from ..util import get_obj_from_str
        network = instantiate_from_config(network_config)
        self.model = get_obj_from_str(network_wrapper or DEFAULT_WRAPPER)(network)
        self.denoiser = instantiate_from_config(denoiser_config)
        self.sampler = instantiate_from_config(sampler_config) if sampler_config is not None else None
        self.conditioner = instantiate_from_config(
            conditioner_config or {"target": "svd_ms.modules.GeneralConditioner", "params": {"emb_models": []}})
        self.first_stage_model = instantiate_from_config(first_stage_config)
        for p in self.first_stage_model.get_parameters():
            p.requires_grad = False
        self.scale_factor = scale_factor
        self.disable_first_stage_autocast = disable_first_stage_autocast
        self.en_and_decode_n_samples_a_time = en_and_decode_n_samples_a_time
        self.loss_fn_config = loss_fn_config

    def decode_first_stage(self, z, chunk_size: Optional[int] = None, callback=None):
        """Latents -> frames in [-1, 1], `chunk_size` frames at a time, each chunk decoded as a
        clip of its own length (the temporal decoder mixes frames within a chunk only)."""
        z = ops.cast(z, ms.float32) / self.scale_factor
        n = z.shape[0]
        chunk_size = chunk_size or self.en_and_decode_n_samples_a_time or n
        outs = []
        for index, start in enumerate(range(0, n, chunk_size)):
            chunk = z[start:start + chunk_size]
            outs.append(self.first_stage_model.decode(chunk, chunk.shape[0]))
            if callback is not None:
                callback(index, outs[-1])
        return ops.cat(outs, axis=0)

    def encode_first_stage(self, x, chunk_size: Optional[int] = None, noise=None):
        n = x.shape[0]
        chunk_size = chunk_size or self.en_and_decode_n_samples_a_time or n
        outs = []
        for start in range(0, n, chunk_size):
            chunk_noise = None if noise is None else noise[start:start + chunk_size]
            outs.append(self.first_stage_model.encode(x[start:start + chunk_size], chunk_noise))
        return ops.cat(outs, axis=0) * self.scale_factor

    # ---- training ----------------------------------------------------------------------------
    # The loss of upstream's StandardDiffusionLoss for video batches. Only
    # `model.diffusion_model` receives gradients: the conditioner and the VAE run here on
    # stop-gradient inputs, and a trainer differentiates with respect to the UNet's parameters.

    def training_loss_fn(self):
        """The StandardDiffusionLoss of `loss_fn_config` (default: l2, EDMWeighting(1.0),
        EDMSampling(p_mean=1.0, p_std=1.6)), built once."""
        fn = self.__dict__.get("_training_loss_fn")
        if fn is None:
            from ..modules.diffusionmodules.loss import StandardDiffusionLoss
            config = self.loss_fn_config
            fn = instantiate_from_config(config) if config is not None else StandardDiffusionLoss()
            self.__dict__["_training_loss_fn"] = fn  # not a sub-cell: no parameters, no name change
        return fn

    def encode_video_latents(self, frames, sample_posterior: bool = False, noise=None):
        """(N, 3, H, W) frames in [-1, 1] -> scaled latents (N, 4, H/8, W/8): the posterior mode
        by default, a posterior sample when `sample_posterior` (whatever the regularizer's own
        `sample` setting, which upstream configs leave on)."""
        regularizer = getattr(self.first_stage_model, "regularization", None)
        previous = getattr(regularizer, "sample", None)
        if previous is not None:
            regularizer.sample = bool(sample_posterior)
        try:
            return ops.stop_gradient(self.encode_first_stage(ops.cast(frames, ms.float32), noise=noise))
        finally:
            if previous is not None:
                regularizer.sample = previous

    def training_inputs(self, batch: Dict, sigmas=None, noise=None, generator=None,
                        sample_posterior: bool = False) -> Dict:
        """Everything the loss needs that carries no gradient: latents, per-frame sigmas and
        noise, and the conditioning repeated to every frame.

        `batch`: `video` (B, T, 3, H, W) in [-1, 1] or `latents` (B*T, 4, h, w) already scaled;
        `cond_frames_without_noise`, `cond_frames` (B, 3, H, W); `fps_id`, `motion_bucket_id`,
        `cond_aug` (B,); `num_video_frames`; optionally `image_only_indicator` (B, T) (zeros by
        default) and `image_cond_keep` (B,) (0 drops a video's image conditioning, as upstream's
        ucg_rate does for training with classifier-free guidance).
        `sigmas` (B,) and `noise` (B*T, 4, h, w) replace the draws from `generator`.
        """
        import numpy as np
        from mindspore import Tensor

        def tensor(value):
            return value if isinstance(value, Tensor) else Tensor(np.asarray(value, np.float32))

        if "video" in batch:
            video = tensor(batch["video"])
            b, t = video.shape[:2]
            posterior_noise = None
            if sample_posterior and generator is not None:
                h, w = video.shape[-2:]
                posterior_noise = Tensor(generator.standard_normal((b * t, 4, h // 8, w // 8)).astype(np.float32))
            latents = self.encode_video_latents(video.reshape((b * t,) + tuple(video.shape[2:])),
                                                sample_posterior, posterior_noise)
        elif "latents" in batch:
            latents = ops.stop_gradient(ops.cast(tensor(batch["latents"]), ms.float32))
            b = int(tensor(batch["cond_frames"]).shape[0])
            t = latents.shape[0] // b
        else:
            raise KeyError("training batch needs 'video' (B, T, 3, H, W) or 'latents' (B*T, 4, h, w)")
        t_given = batch.get("num_video_frames")
        if t_given is not None and int(np.asarray(t_given).reshape(-1)[0]) != t:
            raise ValueError(f"num_video_frames is {t_given} but the batch holds {t} frames per video")
        if latents.shape[0] != b * t:
            raise ValueError(f"latents hold {latents.shape[0]} frames, expected B*T = {b}*{t}")

        cond_batch = {key: batch[key] for key in self.conditioner.input_keys}
        cond = self.conditioner.embed_batch(cond_batch)
        keep = batch.get("image_cond_keep")
        for key in ("crossattn", "concat"):
            if key in cond and keep is not None:
                cond[key] = cond[key] * tensor(keep).reshape((b,) + (1,) * (cond[key].ndim - 1))
        cond = {key: ops.stop_gradient(ops.repeat_interleave(value, t, 0)) for key, value in cond.items()}

        loss_fn = self.training_loss_fn()
        sigmas = loss_fn.sample_sigmas(b, generator=generator) if sigmas is None else tensor(sigmas)
        if tuple(sigmas.shape) != (b,):
            raise ValueError(f"sigmas must have shape ({b},), one per video, got {tuple(sigmas.shape)}")
        noise = loss_fn.draw_noise(tuple(latents.shape), generator) if noise is None else tensor(noise)
        if tuple(noise.shape) != tuple(latents.shape):
            raise ValueError(f"noise must have shape {tuple(latents.shape)}, got {tuple(noise.shape)}")
        ioi = batch.get("image_only_indicator")
        ioi = Tensor(np.zeros((b, t), np.float32)) if ioi is None else tensor(ioi)
        return {"latents": latents, "noise": noise, "sigmas": ops.repeat_interleave(sigmas, t, 0),
                "concat": cond.get("concat"), "crossattn": cond.get("crossattn"), "vector": cond.get("vector"),
                "image_only_indicator": ioi, "num_video_frames": int(t)}

    def loss_from_inputs(self, inputs: Dict, return_denoised: bool = False):
        """The differentiable part: per-frame loss (B*T,) from `training_inputs`."""
        return self.training_loss_fn()(
            self.model, self.denoiser, inputs["latents"], inputs["noise"], inputs["sigmas"], inputs["concat"],
            inputs["crossattn"], inputs["vector"], inputs["image_only_indicator"], inputs["num_video_frames"],
            return_denoised)

    def training_loss(self, batch: Dict, sigmas=None, noise=None, generator=None, sample_posterior: bool = False,
                      return_inputs: bool = False):
        """Per-frame loss (B*T,) of upstream's StandardDiffusionLoss on a video batch (see
        `training_inputs` for the batch). With `return_inputs`, also returns the inputs dict
        with the denoiser output added under 'denoised'."""
        inputs = self.training_inputs(batch, sigmas, noise, generator, sample_posterior)
        if not return_inputs:
            return self.loss_from_inputs(inputs)
        loss, denoised = self.loss_from_inputs(inputs, return_denoised=True)
        return loss, dict(inputs, denoised=denoised)
