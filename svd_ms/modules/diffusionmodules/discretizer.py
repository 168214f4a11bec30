"""Noise-level schedules (sgm.modules.diffusionmodules.discretizer). Host-side, numpy float32."""
import numpy as np


class Discretization:
    def __call__(self, n: int, do_append_zero: bool = True, device=None, flip: bool = False) -> np.ndarray:
        sigmas = self.get_sigmas(n)
        if do_append_zero:
            sigmas = np.append(sigmas, np.float32(0.0)).astype(np.float32)
        return sigmas[::-1].copy() if flip else sigmas

    def get_sigmas(self, n: int) -> np.ndarray:
        raise NotImplementedError


class EDMDiscretization(Discretization):
    """Karras et al. (2022) schedule from sigma_max down to sigma_min with exponent rho."""

    def __init__(self, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0):
        self.sigma_min = sigma_min
        self.sigma_max = sigma_max
        self.rho = rho

    def get_sigmas(self, n: int) -> np.ndarray:
        ramp = np.linspace(0, 1, n, dtype=np.float32)
        min_inv_rho = np.float32(self.sigma_min ** (1 / self.rho))
        max_inv_rho = np.float32(self.sigma_max ** (1 / self.rho))
        return ((max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** np.float32(self.rho)).astype(np.float32)


class ConsistencyDiscretization(Discretization):
    """AnimateLCM-SVD's sigma grid: a Karras grid of `num_train_timesteps` levels (computed in
    float64, then rounded to float32) from which n steps take every (num_train_timesteps // n)-th
    level, starting at sigma_max."""

    def __init__(self, num_train_timesteps: int = 40, sigma_min: float = 0.002, sigma_max: float = 700.0,
                 rho: float = 7.0):
        self.num_train_timesteps = num_train_timesteps
        self.sigma_min = sigma_min
        self.sigma_max = sigma_max
        self.rho = rho

    def get_sigmas(self, n: int) -> np.ndarray:
        if not 1 <= n <= self.num_train_timesteps:
            raise ValueError(f"steps must be between 1 and {self.num_train_timesteps}, got {n}")
        levels = np.arange(n) * (self.num_train_timesteps // n)
        ramp = levels / (self.num_train_timesteps - 1)
        min_inv_rho = self.sigma_min ** (1 / self.rho)
        max_inv_rho = self.sigma_max ** (1 / self.rho)
        return ((max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** self.rho).astype(np.float32)
