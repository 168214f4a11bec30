"""The denoising loss used for training (sgm.modules.diffusionmodules.loss).

`StandardDiffusionLoss` noises clean latents x with a given noise level sigma,
    x_noisy = x + sigma * noise,
denoises them with the preconditioned network D(x_noisy, sigma), and returns, per row (one row
is one video frame), the weighted error
    lambda(sigma) * mean_{c,h,w} (D(x_noisy, sigma) - x)^2        (l2)
    lambda(sigma) * mean_{c,h,w} |D(x_noisy, sigma) - x|          (l1)
Drawing sigma and the noise is left to the caller (see `sample_sigmas` / `draw_noise`), so the
differentiated part is a pure function of tensors.
"""
from typing import Dict, List, Optional, Union

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn, ops

from ...util import append_dims, instantiate_from_config

LOSS_TYPES = ("l2", "l1")

DEFAULT_SIGMA_SAMPLER = {"target": "svd_ms.modules.diffusionmodules.sigma_sampling.EDMSampling",
                         "params": {"p_mean": 1.0, "p_std": 1.6}}
DEFAULT_LOSS_WEIGHTING = {"target": "svd_ms.modules.diffusionmodules.loss_weighting.EDMWeighting",
                          "params": {"sigma_data": 1.0}}


class StandardDiffusionLoss(nn.Cell):
    def __init__(self, sigma_sampler_config: Optional[Dict] = None, loss_weighting_config: Optional[Dict] = None,
                 loss_type: str = "l2", offset_noise_level: float = 0.0,
                 batch2model_keys: Optional[Union[str, List[str]]] = None):
        super().__init__()
        if loss_type not in LOSS_TYPES:
            raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got '{loss_type}'"
                             + (" (the LPIPS loss is not ported)" if loss_type == "lpips" else ""))
        self.sigma_sampler = instantiate_from_config(sigma_sampler_config or DEFAULT_SIGMA_SAMPLER)
        self.loss_weighting = instantiate_from_config(loss_weighting_config or DEFAULT_LOSS_WEIGHTING)
        self.loss_type = loss_type
        self.offset_noise_level = float(offset_noise_level)
        if isinstance(batch2model_keys, str):
            batch2model_keys = [batch2model_keys]
        # The video model always receives image_only_indicator and num_video_frames here; the
        # option is kept so that upstream configs load unchanged.
        self.batch2model_keys = set(batch2model_keys or [])

    # ---- random draws (host side) ---------------------------------------------------------
    def sample_sigmas(self, n: int, rand=None, generator: Optional[np.random.Generator] = None) -> Tensor:
        return self.sigma_sampler(n, rand=rand, generator=generator)

    def draw_noise(self, shape, generator: Optional[np.random.Generator] = None) -> Tensor:
        """Standard normal noise of `shape` (N, C, ...), plus the offset noise if configured
        (one extra normal value per row and channel, broadcast over the other axes)."""
        generator = generator if generator is not None else np.random.default_rng()
        noise = generator.standard_normal(shape).astype(np.float32)
        if self.offset_noise_level > 0.0:
            offset = generator.standard_normal(tuple(shape[:2]) + (1,) * (len(shape) - 2)).astype(np.float32)
            noise = noise + self.offset_noise_level * offset
        return Tensor(noise, ms.float32)

    # ---- the differentiable part ------------------------------------------------------------
    @staticmethod
    def get_noised_input(sigmas_bc, noise, x):
        return x + noise * sigmas_bc

    def get_loss(self, model_output, target, w):
        diff = model_output - target
        err = ops.square(diff) if self.loss_type == "l2" else ops.abs(diff)
        return (w * err).reshape(target.shape[0], -1).mean(axis=1)

    def construct(self, network, denoiser, x, noise, sigmas, concat, crossattn, vector, image_only_indicator,
                  num_video_frames, return_denoised: bool = False):
        """x, noise: (N, C, h, w) float32; sigmas: (N,), one per row. Returns the (N,) loss, and
        the denoiser output too when `return_denoised`."""
        x = ops.cast(x, ms.float32)
        sigmas = ops.cast(sigmas, ms.float32)
        sigmas_bc = append_dims(sigmas, x.ndim)
        noised = self.get_noised_input(sigmas_bc, ops.cast(noise, ms.float32), x)
        denoised = denoiser(network, noised, sigmas, concat, crossattn, vector, image_only_indicator,
                            num_video_frames)
        w = append_dims(self.loss_weighting(sigmas), x.ndim)
        loss = self.get_loss(denoised, x, w)
        if return_denoised:
            return loss, denoised
        return loss
