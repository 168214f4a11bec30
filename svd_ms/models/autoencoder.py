"""Autoencoders of the first stage and of the conditioning-frame encoder (sgm.models.autoencoder)."""
from typing import Dict, Optional

from mindspore import nn

from ..modules.layers import Conv2d
from ..util import instantiate_from_config


class AutoencodingEngine(nn.Cell):
    """Encoder, regularizer and decoder built from their configs. Training-only settings
    (loss, optimizer, discriminator, checkpoint paths) are accepted and ignored."""

    def __init__(self, *args, encoder_config: Dict, decoder_config: Dict, loss_config: Optional[Dict] = None,
                 regularizer_config: Dict, **ignored):
        super().__init__()
        self.encoder = instantiate_from_config(encoder_config)
        self.decoder = instantiate_from_config(decoder_config)
        self.regularization = instantiate_from_config(regularizer_config)

    @property
    def is_video_decoder(self) -> bool:
        return getattr(self.decoder, "conv_out_takes_timesteps", False) or hasattr(self.decoder, "time_mode")

    def encode(self, x, noise=None):
        return self.regularization(self.encoder(x), noise)

    def decode(self, z, timesteps=None):
        return self.decoder(z, timesteps)


class AutoencodingEngineLegacy(AutoencodingEngine):
    """The original LDM autoencoder layout: `ddconfig` plus 1x1 quant convolutions."""

    def __init__(self, embed_dim: int, ddconfig: Dict, regularizer_config: Dict, **kwargs):
        kwargs.pop("lossconfig", None)
        kwargs.pop("loss_config", None)
        super().__init__(
            encoder_config={"target": "svd_ms.modules.diffusionmodules.model.Encoder", "params": ddconfig},
            decoder_config={"target": "svd_ms.modules.diffusionmodules.model.Decoder", "params": ddconfig},
            regularizer_config=regularizer_config, **kwargs)
        z2 = (1 + ddconfig["double_z"]) * ddconfig["z_channels"]
        self.quant_conv = Conv2d(z2, (1 + ddconfig["double_z"]) * embed_dim, 1)
        self.post_quant_conv = Conv2d(embed_dim, ddconfig["z_channels"], 1)
        self.embed_dim = embed_dim

    def encode(self, x, noise=None):
        return self.regularization(self.quant_conv(self.encoder(x)), noise)

    def decode(self, z, timesteps=None):
        return self.decoder(self.post_quant_conv(z), timesteps)


class AutoencoderKL(AutoencodingEngineLegacy):
    def __init__(self, **kwargs):
        super().__init__(regularizer_config={
            "target": "svd_ms.modules.autoencoding.regularizers.DiagonalGaussianRegularizer"}, **kwargs)


class AutoencoderKLModeOnly(AutoencodingEngineLegacy):
    def __init__(self, **kwargs):
        super().__init__(regularizer_config={
            "target": "svd_ms.modules.autoencoding.regularizers.DiagonalGaussianRegularizer",
            "params": {"sample": False}}, **kwargs)
