"""Samplers (sgm.modules.diffusionmodules.sampling), k-diffusion style.

The step functions are plain functions over tensors; the sampler objects only hold their
configuration. The sampler state stays in float32.
"""
from typing import Callable, Dict, Optional

import mindspore as ms
import numpy as np
from mindspore import Tensor, ops

from ...util import instantiate_from_config

DEFAULT_GUIDER = {"target": "svd_ms.modules.diffusionmodules.guiders.IdentityGuider"}


def to_d(x, sigma: float, denoised):
    """The ODE derivative dx/dsigma at (x, sigma)."""
    return (x - denoised) / sigma


def euler_edm_step(denoise: Callable, x, sigma: float, next_sigma: float, gamma: float = 0.0,
                   noise=None, s_noise: float = 1.0):
    """One (optionally churned) Euler step of the EDM sampler from sigma to next_sigma."""
    sigma_hat = sigma * (gamma + 1.0)
    if gamma > 0:
        x = x + noise * s_noise * float(np.sqrt(sigma_hat ** 2 - sigma ** 2))
    denoised = denoise(x, sigma_hat)
    return x + (next_sigma - sigma_hat) * to_d(x, sigma_hat, denoised), denoised


class BaseDiffusionSampler:
    def __init__(self, discretization_config: Dict, num_steps: Optional[int] = None,
                 guider_config: Optional[Dict] = None, verbose: bool = False, device: str = "cpu"):
        self.num_steps = num_steps
        self.discretization = instantiate_from_config(discretization_config)
        self.guider = instantiate_from_config(guider_config or DEFAULT_GUIDER)
        self.verbose = verbose

    def sigmas(self, num_steps: Optional[int] = None) -> np.ndarray:
        return self.discretization(self.num_steps if num_steps is None else num_steps)


class EDMSampler(BaseDiffusionSampler):
    def __init__(self, s_churn: float = 0.0, s_tmin: float = 0.0, s_tmax: float = float("inf"),
                 s_noise: float = 1.0, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.s_churn = s_churn
        self.s_tmin = s_tmin
        self.s_tmax = s_tmax
        self.s_noise = s_noise

    def gamma(self, sigma: float, num_sigmas: int) -> float:
        if self.s_tmin <= sigma <= self.s_tmax:
            return min(self.s_churn / (num_sigmas - 1), 2 ** 0.5 - 1)
        return 0.0

    def __call__(self, denoise: Callable, x, num_steps: Optional[int] = None, rng: Optional[np.random.Generator] = None,
                 callback: Optional[Callable] = None):
        """denoise(x, sigma: float) -> denoised. `x` is unit-variance noise; it is scaled to
        sigma_0 here. callback(step, x, denoised) runs after each step (progress, guards)."""
        sigmas = self.sigmas(num_steps)
        x = ops.cast(x, ms.float32) * float(np.sqrt(1.0 + sigmas[0] ** 2.0))
        num_sigmas = len(sigmas)
        for i in range(num_sigmas - 1):
            sigma, next_sigma = float(sigmas[i]), float(sigmas[i + 1])
            gamma = self.gamma(sigma, num_sigmas)
            noise = None
            if gamma > 0:
                rng = rng or np.random.default_rng()
                noise = Tensor(rng.standard_normal(x.shape).astype(np.float32))
            x, denoised = euler_edm_step(denoise, x, sigma, next_sigma, gamma, noise, self.s_noise)
            if callback is not None:
                callback(i, x, denoised)
        return x


class EulerEDMSampler(EDMSampler):
    pass
