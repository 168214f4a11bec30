"""Preconditioning of the network input and output for a noise level sigma
(sgm.modules.diffusionmodules.denoiser_scaling). Each returns (c_skip, c_out, c_in, c_noise)."""
from mindspore import nn, ops


class EDMScaling(nn.Cell):
    def __init__(self, sigma_data: float = 0.5):
        super().__init__()
        self.sigma_data = sigma_data

    def construct(self, sigma):
        sd2 = self.sigma_data ** 2
        c_skip = sd2 / (sigma ** 2 + sd2)
        c_out = sigma * self.sigma_data / ops.sqrt(sigma ** 2 + sd2)
        c_in = 1 / ops.sqrt(sigma ** 2 + sd2)
        c_noise = 0.25 * ops.log(sigma)
        return c_skip, c_out, c_in, c_noise


class EpsScaling(nn.Cell):
    def construct(self, sigma):
        return ops.ones_like(sigma), -sigma, 1 / ops.sqrt(sigma ** 2 + 1.0), sigma


class VScaling(nn.Cell):
    def construct(self, sigma):
        c_skip = 1.0 / (sigma ** 2 + 1.0)
        c_out = -sigma / ops.sqrt(sigma ** 2 + 1.0)
        c_in = 1.0 / ops.sqrt(sigma ** 2 + 1.0)
        return c_skip, c_out, c_in, sigma


class VScalingWithEDMcNoise(nn.Cell):
    """v-prediction scalings with EDM's noise conditioning c_noise = log(sigma) / 4 (SVD)."""

    def construct(self, sigma):
        c_skip = 1.0 / (sigma ** 2 + 1.0)
        c_out = -sigma / ops.sqrt(sigma ** 2 + 1.0)
        c_in = 1.0 / ops.sqrt(sigma ** 2 + 1.0)
        c_noise = 0.25 * ops.log(sigma)
        return c_skip, c_out, c_in, c_noise
