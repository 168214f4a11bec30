"""Noise levels for training (sgm.modules.diffusionmodules.sigma_sampling).

Samplers return float32 Tensors of shape (n,). Randomness comes from a numpy Generator, so a
trainer that derives one generator per sample can reproduce any draw exactly (resume, data
parallel) without touching MindSpore's global seed.
"""
from typing import Optional

import mindspore as ms
import numpy as np
from mindspore import Tensor


def _standard_normal(n: int, rand=None, generator: Optional[np.random.Generator] = None) -> np.ndarray:
    if rand is not None:
        values = rand.asnumpy() if isinstance(rand, Tensor) else np.asarray(rand)
        return values.astype(np.float32).reshape(n)
    generator = generator if generator is not None else np.random.default_rng()
    return generator.standard_normal(n).astype(np.float32)


class EDMSampling:
    """log(sigma) ~ N(p_mean, p_std^2). SVD fine-tuning uses p_mean 1.0, p_std 1.6."""

    def __init__(self, p_mean: float = -1.2, p_std: float = 1.2):
        self.p_mean = float(p_mean)
        self.p_std = float(p_std)

    def __call__(self, n_samples: int, rand=None, generator: Optional[np.random.Generator] = None) -> Tensor:
        z = _standard_normal(n_samples, rand, generator)
        return Tensor(np.exp(self.p_mean + self.p_std * z).astype(np.float32), ms.float32)


class ZeroSampler:
    """A (near-)zero noise level for every sample."""

    def __call__(self, n_samples: int, rand=None, generator: Optional[np.random.Generator] = None) -> Tensor:
        return Tensor(np.full((n_samples,), 1.0e-5, np.float32), ms.float32)
