"""Latent regularizers (sgm.modules.autoencoding.regularizers)."""
from mindspore import nn, ops


class DiagonalGaussianRegularizer(nn.Cell):
    """Splits encoder moments into mean and log-variance and returns the posterior mode, or a
    sample `mean + std * noise` when sampling (noise drawn here unless given)."""

    def __init__(self, sample: bool = True):
        super().__init__()
        self.sample = sample

    def construct(self, moments, noise=None):
        mean, logvar = ops.chunk(moments, 2, axis=1)
        if not self.sample:
            return mean
        logvar = ops.clamp(logvar, -30.0, 20.0)
        if noise is None:
            noise = ops.randn(mean.shape, dtype=mean.dtype)
        return mean + ops.exp(0.5 * logvar) * noise
