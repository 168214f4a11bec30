"""The diffusion engine: conditioner, denoiser, network, first stage and sampler, built from one
config (sgm.models.diffusion.DiffusionEngine)."""
from typing import Dict, Optional

import mindspore as ms
from mindspore import nn, ops

from ..util import instantiate_from_config

DEFAULT_WRAPPER = "svd_ms.modules.diffusionmodules.wrappers.OpenAIWrapper"


class GuidedDenoiserStep(nn.Cell):
    """One guided evaluation of the denoiser: batch the copies, precondition, run the UNet,
    combine with the guider. This is the unit that graph mode compiles once and reuses."""

    def __init__(self, engine: "DiffusionEngine", guider):
        super().__init__(auto_prefix=False)
        self.network = engine.model
        self.denoiser = engine.denoiser
        self.guider = guider
        self.num_copies = guider.num_copies

    def construct(self, x, sigma, concat, crossattn, vector, image_only_indicator, num_video_frames):
        x_in = ops.cat([x] * self.num_copies, axis=0) if self.num_copies > 1 else x
        sigma_in = ops.broadcast_to(ops.cast(sigma, ms.float32).reshape(1), (x_in.shape[0],))
        denoised = self.denoiser(self.network, x_in, sigma_in, concat, crossattn, vector, image_only_indicator,
                                 num_video_frames)
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
