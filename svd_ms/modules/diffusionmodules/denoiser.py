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
        sigma = ops.cast(sigma, ms.float32)
        x = ops.cast(x, ms.float32)
        c_skip, c_out, c_in, c_noise = self.scaling(append_dims(sigma, x.ndim))
        out = network(x * c_in, c_noise.reshape(sigma.shape), concat, crossattn, vector, image_only_indicator,
                      num_video_frames)
        return ops.cast(out, ms.float32) * c_out + x * c_skip
