"""The denoiser D(x, sigma) = c_skip x + c_out F(c_in x, c_noise) (sgm.modules.diffusionmodules.denoiser).

Everything here is computed in float32: sigma reaches 700 and sigma**2 overflows float16.
"""
from typing import Dict

import mindspore as ms
from mindspore import nn, ops

from ...util import append_dims, instantiate_from_config


class Denoiser(nn.Cell):
    def __init__(self, scaling_config: Dict):
        super().__init__()
        self.scaling = instantiate_from_config(scaling_config)

    def construct(self, network, x, sigma, concat, crossattn, vector, image_only_indicator, num_video_frames):
        """`network` is the wrapped UNet (a member of the calling cell); sigma is (B,)."""
        x, scaled, c_skip, c_out, c_noise = self.precondition(x, sigma)
        out = network(scaled, c_noise, concat, crossattn, vector, image_only_indicator, num_video_frames)
        return self.combine(out, x, c_skip, c_out)

    def precondition(self, x, sigma):
        """(x in float32, the network input c_in x, c_skip, c_out, c_noise of shape sigma's)."""
        sigma = ops.cast(sigma, ms.float32)
        x = ops.cast(x, ms.float32)
        c_skip, c_out, c_in, c_noise = self.scaling(append_dims(sigma, x.ndim))
        return x, x * c_in, c_skip, c_out, c_noise.reshape(sigma.shape)

    def combine(self, out, x, c_skip, c_out):
        return ops.cast(out, ms.float32) * c_out + x * c_skip
