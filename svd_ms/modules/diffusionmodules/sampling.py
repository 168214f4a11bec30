"""Samplers (sgm.modules.diffusionmodules.sampling), k-diffusion style.

Every sampler is a function with one signature,

    sample_<name>(denoise, x, sigmas, noise, callback=None, **params) -> x

`denoise(x, sigma: float) -> denoised` is the guided denoiser, `x` is already scaled to
sigmas[0], `sigmas` the discretization with its trailing 0, `noise(x)` returns the next noise
draw shaped like `x` (upstream's `torch.randn_like` calls, in the same order, so a recorded
sequence of draws replays a run), and `callback(i, x, denoised)` runs after each step.

The classes are the config contract: `sgm.modules.diffusionmodules.sampling.*` targets with
upstream's parameters. They hold the configuration and call the function; they keep no state
between calls. Scalars derived from sigmas are computed on the host in float64; the latents stay
in float32.
"""
import math
from typing import Callable, Dict, Iterator, List, Optional

import mindspore as ms
import numpy as np
from mindspore import Tensor, ops

from ...errors import InputError
from ...util import instantiate_from_config

DEFAULT_GUIDER = {"target": "svd_ms.modules.diffusionmodules.guiders.IdentityGuider"}


# ---- noise draws ---------------------------------------------------------------------------

def noise_from_rng(rng: Optional[np.random.Generator] = None) -> Callable:
    """Draws from a numpy generator (float32 standard normal)."""
    rng = rng if rng is not None else np.random.default_rng()

    def noise(x):
        return Tensor(rng.standard_normal(tuple(x.shape)).astype(np.float32))
    return noise


def noise_from_draws(draws) -> Callable:
    """Hands out the entries of `draws` (K, *x.shape) in order: the k-th call returns draws[k]."""
    draws = np.asarray(draws, np.float32)
    taken: Iterator[int] = iter(range(len(draws)))

    def noise(x):
        k = next(taken, None)
        if k is None:
            raise InputError(f"sampler_noise holds {len(draws)} draws but the sampler asks for more")
        if tuple(draws[k].shape) != tuple(x.shape):
            raise InputError(f"sampler_noise entries must have shape {tuple(x.shape)}, got {draws[k].shape}")
        return Tensor(draws[k])
    return noise


# ---- helpers -------------------------------------------------------------------------------

def to_d(x, sigma: float, denoised):
    """The ODE derivative dx/dsigma at (x, sigma)."""
    return (x - denoised) / sigma


def churn_gamma(sigma: float, num_sigmas: int, s_churn: float, s_tmin: float, s_tmax: float) -> float:
    if s_tmin <= sigma <= s_tmax:
        return min(s_churn / (num_sigmas - 1), 2 ** 0.5 - 1)
    return 0.0


def ancestral_step_sizes(sigma: float, next_sigma: float, eta: float):
    """(sigma_down, sigma_up): the deterministic step target and the noise re-added after it."""
    if not eta:
        return next_sigma, 0.0
    sigma_up = min(next_sigma, eta * math.sqrt(next_sigma ** 2 * (sigma ** 2 - next_sigma ** 2) / sigma ** 2))
    return math.sqrt(next_sigma ** 2 - sigma_up ** 2), sigma_up


def linear_multistep_coeff(order: int, sigmas: np.ndarray, i: int, j: int) -> float:
    """Integral over [sigma_i, sigma_{i+1}] of the Lagrange basis polynomial of node i - j among
    the last `order` nodes. Exact polynomial integration; upstream's adaptive quadrature agrees to
    float64 rounding on these low-degree polynomials."""
    if order - 1 > i:
        raise ValueError(f"order {order} too high for step {i}")
    t = np.asarray(sigmas, np.float64)
    basis = np.polynomial.Polynomial([1.0])
    for k in range(order):
        if k != j:
            basis = basis * np.polynomial.Polynomial([-t[i - k], 1.0]) / (t[i - j] - t[i - k])
    antiderivative = basis.integ()
    return float(antiderivative(t[i + 1]) - antiderivative(t[i]))


def _ancestral_noise(x, noise, next_sigma: float, sigma_up: float, s_noise: float):
    # Upstream draws on every step, also the last one where the draw is multiplied away.
    eps = noise(x)
    return x + eps * (s_noise * sigma_up) if next_sigma > 0 else x


def _steps(sigmas):
    return [(i, float(sigmas[i]), float(sigmas[i + 1])) for i in range(len(sigmas) - 1)]


def _done(callback, i, x, denoised):
    if callback is not None:
        callback(i, x, denoised)


# ---- the samplers --------------------------------------------------------------------------

def sample_euler(denoise, x, sigmas, noise, callback=None, s_churn=0.0, s_tmin=0.0, s_tmax=float("inf"),
                 s_noise=1.0):
    """Euler steps of the probability-flow ODE, with EDM churn (noise added above sigma first)."""
    for i, sigma, next_sigma in _steps(sigmas):
        gamma = churn_gamma(sigma, len(sigmas), s_churn, s_tmin, s_tmax)
        sigma_hat = sigma * (gamma + 1.0)
        if gamma > 0:
            x = x + noise(x) * (s_noise * math.sqrt(sigma_hat ** 2 - sigma ** 2))
        denoised = denoise(x, sigma_hat)
        x = x + to_d(x, sigma_hat, denoised) * (next_sigma - sigma_hat)
        _done(callback, i, x, denoised)
    return x


def sample_heun(denoise, x, sigmas, noise, callback=None, s_churn=0.0, s_tmin=0.0, s_tmax=float("inf"),
                s_noise=1.0):
    """Heun's second-order method (EDM algorithm 2); the last step, to sigma 0, is plain Euler."""
    for i, sigma, next_sigma in _steps(sigmas):
        gamma = churn_gamma(sigma, len(sigmas), s_churn, s_tmin, s_tmax)
        sigma_hat = sigma * (gamma + 1.0)
        if gamma > 0:
            x = x + noise(x) * (s_noise * math.sqrt(sigma_hat ** 2 - sigma ** 2))
        denoised = denoise(x, sigma_hat)
        d = to_d(x, sigma_hat, denoised)
        dt = next_sigma - sigma_hat
        x_euler = x + d * dt
        if next_sigma > 0:
            d_next = to_d(x_euler, next_sigma, denoise(x_euler, next_sigma))
            x = x + (d + d_next) * (dt / 2.0)
        else:
            x = x_euler
        _done(callback, i, x, denoised)
    return x


def sample_euler_ancestral(denoise, x, sigmas, noise, callback=None, eta=1.0, s_noise=1.0):
    """Euler step down to sigma_down, then fresh noise up to next_sigma."""
    for i, sigma, next_sigma in _steps(sigmas):
        sigma_down, sigma_up = ancestral_step_sizes(sigma, next_sigma, eta)
        denoised = denoise(x, sigma)
        x = x + to_d(x, sigma, denoised) * (sigma_down - sigma)
        x = _ancestral_noise(x, noise, next_sigma, sigma_up, s_noise)
        _done(callback, i, x, denoised)
    return x


def sample_dpmpp_2s_ancestral(denoise, x, sigmas, noise, callback=None, eta=1.0, s_noise=1.0):
    """DPM-Solver++(2S): a midpoint evaluation in log-sigma, then ancestral noise."""
    for i, sigma, next_sigma in _steps(sigmas):
        sigma_down, sigma_up = ancestral_step_sizes(sigma, next_sigma, eta)
        denoised = denoise(x, sigma)
        if sigma_down < 1e-14:
            x = x + to_d(x, sigma, denoised) * (sigma_down - sigma)
        else:
            t, t_next = -math.log(sigma), -math.log(sigma_down)
            h = t_next - t
            s = t + 0.5 * h
            x_mid = x * (math.exp(-s) / math.exp(-t)) - denoised * math.expm1(-0.5 * h)
            denoised_mid = denoise(x_mid, math.exp(-s))
            x = x * (math.exp(-t_next) / math.exp(-t)) - denoised_mid * math.expm1(-h)
        x = _ancestral_noise(x, noise, next_sigma, sigma_up, s_noise)
        _done(callback, i, x, denoised)
    return x


def sample_dpmpp_2m(denoise, x, sigmas, noise, callback=None):
    """DPM-Solver++(2M): second order from the previous step's denoised, first order on the
    first step and on the step to sigma 0."""
    old_denoised = None
    for i, sigma, next_sigma in _steps(sigmas):
        denoised = denoise(x, sigma)
        if next_sigma == 0:
            x = denoised
        else:
            t, t_next = -math.log(sigma), -math.log(next_sigma)
            h = t_next - t
            target = denoised
            if old_denoised is not None:
                r = (t + math.log(float(sigmas[i - 1]))) / h
                target = denoised * (1 + 1 / (2 * r)) - old_denoised * (1 / (2 * r))
            x = x * (next_sigma / sigma) - target * math.expm1(-h)
        old_denoised = denoised
        _done(callback, i, x, denoised)
    return x


def sample_lms(denoise, x, sigmas, noise, callback=None, order=4):
    """Linear multistep on the last `order` derivatives."""
    derivatives: List = []
    for i, sigma, next_sigma in _steps(sigmas):
        denoised = denoise(x, sigma)
        derivatives.append(to_d(x, sigma, denoised))
        if len(derivatives) > order:
            derivatives.pop(0)
        cur_order = min(i + 1, order)
        for j, d in enumerate(reversed(derivatives)):
            x = x + d * linear_multistep_coeff(cur_order, sigmas, i, j)
        _done(callback, i, x, denoised)
    return x


def sample_lcm(denoise, x, sigmas, noise, callback=None, s_noise=1.0, sigma_max=float("inf")):
    """Consistency sampling (AnimateLCM-SVD): jump to the denoised estimate, then re-noise it
    completely to the next sigma. Upstream draws noise on every step (the last draw is multiplied
    by sigma 0) unless the whole run is a single step."""
    draw = len(sigmas) > 2
    for i, sigma, next_sigma in _steps(sigmas):
        denoised = denoise(x, sigma)
        x = denoised
        if draw:
            x = denoised + noise(denoised) * (s_noise * min(max(next_sigma, 0.0), sigma_max))
        _done(callback, i, x, denoised)
    return x


# ---- the config contract -------------------------------------------------------------------

class BaseDiffusionSampler:
    """Holds discretization, guider and step count; `__call__` runs `sample_fn`."""

    sample_fn: Callable = None

    def __init__(self, discretization_config: Dict, num_steps: Optional[int] = None,
                 guider_config: Optional[Dict] = None, verbose: bool = False, device: str = "cpu"):
        self.num_steps = num_steps
        self.discretization = instantiate_from_config(discretization_config)
        self.guider = instantiate_from_config(guider_config or DEFAULT_GUIDER)
        self.verbose = verbose

    def sigmas(self, num_steps: Optional[int] = None) -> np.ndarray:
        return self.discretization(self.num_steps if num_steps is None else num_steps)

    def params(self) -> Dict:
        """Keyword arguments of `sample_fn` beyond the common ones."""
        return {}

    def num_noise_draws(self, num_steps: Optional[int] = None) -> int:
        """How many noise draws a run of `num_steps` makes (the K of sampler_noise)."""
        return 0

    def __call__(self, denoise: Callable, x, num_steps: Optional[int] = None, noise=None,
                 callback: Optional[Callable] = None):
        """`x`: unit-variance noise, scaled to sigmas[0] here as upstream does. `noise`: a draw
        function (see noise_from_draws), or a numpy Generator, or None (fresh entropy)."""
        sigmas = self.sigmas(num_steps)
        if not callable(noise):
            noise = noise_from_rng(noise)
        x = ops.cast(x, ms.float32) * float(np.sqrt(1.0 + np.float32(sigmas[0]) ** 2.0))
        return type(self).sample_fn(denoise, x, sigmas, noise, callback, **self.params())


class EDMSampler(BaseDiffusionSampler):
    def __init__(self, s_churn: float = 0.0, s_tmin: float = 0.0, s_tmax: float = float("inf"),
                 s_noise: float = 1.0, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.s_churn = s_churn
        self.s_tmin = s_tmin
        self.s_tmax = s_tmax
        self.s_noise = s_noise

    def params(self) -> Dict:
        return dict(s_churn=self.s_churn, s_tmin=self.s_tmin, s_tmax=self.s_tmax, s_noise=self.s_noise)

    def num_noise_draws(self, num_steps: Optional[int] = None) -> int:
        sigmas = self.sigmas(num_steps)
        return sum(churn_gamma(float(s), len(sigmas), self.s_churn, self.s_tmin, self.s_tmax) > 0
                   for s in sigmas[:-1])


class EulerEDMSampler(EDMSampler):
    sample_fn = staticmethod(sample_euler)


class HeunEDMSampler(EDMSampler):
    sample_fn = staticmethod(sample_heun)


class AncestralSampler(BaseDiffusionSampler):
    def __init__(self, eta: float = 1.0, s_noise: float = 1.0, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.eta = eta
        self.s_noise = s_noise

    def params(self) -> Dict:
        return dict(eta=self.eta, s_noise=self.s_noise)

    def num_noise_draws(self, num_steps: Optional[int] = None) -> int:
        return len(self.sigmas(num_steps)) - 1


class EulerAncestralSampler(AncestralSampler):
    sample_fn = staticmethod(sample_euler_ancestral)


class DPMPP2SAncestralSampler(AncestralSampler):
    sample_fn = staticmethod(sample_dpmpp_2s_ancestral)


class DPMPP2MSampler(BaseDiffusionSampler):
    sample_fn = staticmethod(sample_dpmpp_2m)


class LinearMultistepSampler(BaseDiffusionSampler):
    sample_fn = staticmethod(sample_lms)

    def __init__(self, order: int = 4, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.order = order

    def params(self) -> Dict:
        return dict(order=self.order)


class ConsistencySampler(BaseDiffusionSampler):
    """AnimateLCM-SVD's consistency sampling; pair it with ConsistencyDiscretization (its sigma
    grid) and the denoiser's VScalingWithEDMcNoise (its input scaling and boundary condition)."""

    sample_fn = staticmethod(sample_lcm)
    MAX_STEPS = 8

    def __init__(self, s_noise: float = 1.0, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.s_noise = s_noise

    def params(self) -> Dict:
        return dict(s_noise=self.s_noise, sigma_max=float(getattr(self.discretization, "sigma_max", float("inf"))))

    def sigmas(self, num_steps: Optional[int] = None) -> np.ndarray:
        n = self.num_steps if num_steps is None else num_steps
        if n is None or not 1 <= int(n) <= self.MAX_STEPS:
            raise InputError(f"the consistency sampler (lcm) takes 1 to {self.MAX_STEPS} steps, got {n}")
        return super().sigmas(int(n))

    def num_noise_draws(self, num_steps: Optional[int] = None) -> int:
        steps = len(self.sigmas(num_steps)) - 1
        return steps if steps > 1 else 0
