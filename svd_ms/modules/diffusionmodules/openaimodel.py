"""Building blocks of the UNet shared by image and video models (sgm.modules.diffusionmodules.openaimodel)."""
from typing import Iterable

from mindspore import nn, ops

from ..layers import GroupNorm, Identity, Linear, SiLU, conv_nd, nearest_upsample


def normalization(channels: int) -> GroupNorm:
    return GroupNorm(32, channels)


class TimestepEmbedSequential(nn.SequentialCell):
    """A sequence whose timestep-aware members also receive the embedding, context and video
    arguments; plain members (convolutions, resamplers) receive the features only."""

    def construct(self, x, emb, context=None, image_only_indicator=None, num_video_frames=None):
        for layer in self.cell_list:
            if getattr(layer, "is_timestep_block", False):
                x = layer(x, emb, context, image_only_indicator, num_video_frames)
            else:
                x = layer(x)
        return x


class Upsample(nn.Cell):
    """Nearest 2x upsampling of the two inner axes, then an optional 3x3 convolution."""

    def __init__(self, channels, use_conv, dims=2, out_channels=None, padding=1, third_up=False, kernel_size=3,
                 scale_factor=2):
        super().__init__()
        if third_up:
            raise NotImplementedError("Upsample with third_up=True (temporal upsampling) is not supported")
        self.channels = channels
        self.out_channels = out_channels or channels
        self.use_conv = use_conv
        self.scale_factor = scale_factor
        self.conv = conv_nd(dims, channels, self.out_channels, kernel_size, padding=padding) if use_conv else None

    def construct(self, x):
        x = nearest_upsample(x, self.scale_factor)
        if self.conv is not None:
            x = self.conv(x)
        return x


class Downsample(nn.Cell):
    """Stride-2 3x3 convolution, or 2x2 average pooling, over the two inner axes."""

    def __init__(self, channels, use_conv, dims=2, out_channels=None, padding=1, third_down=False):
        super().__init__()
        if third_down:
            raise NotImplementedError("Downsample with third_down=True (temporal downsampling) is not supported")
        self.channels = channels
        self.out_channels = out_channels or channels
        self.use_conv = use_conv
        stride = 2 if dims == 2 else (1, 2, 2)
        if use_conv:
            self.op = conv_nd(dims, channels, self.out_channels, 3, stride=stride, padding=padding)
        else:
            if self.out_channels != channels:
                raise ValueError("Downsample without convolution cannot change the channel count")
            self.op = None

    def construct(self, x):
        if self.op is not None:
            return self.op(x)
        shape = x.shape
        h, w = shape[-2], shape[-1]
        x = x.reshape(shape[:-2] + (h // 2, 2, w // 2, 2))
        return x.mean(axis=(-3, -1))


class ResBlock(nn.Cell):
    """Residual block conditioned on the timestep embedding (2-D, or 3-D for temporal mixing)."""

    def __init__(self, channels, emb_channels, dropout=0.0, out_channels=None, use_conv=False,
                 use_scale_shift_norm=False, dims=2, use_checkpoint=False, up=False, down=False, kernel_size=3,
                 exchange_temb_dims=False, skip_t_emb=False):
        super().__init__()
        self.channels = channels
        self.out_channels = out_channels or channels
        self.use_scale_shift_norm = use_scale_shift_norm
        self.exchange_temb_dims = exchange_temb_dims and not skip_t_emb
        self.skip_t_emb = skip_t_emb
        if isinstance(kernel_size, Iterable):
            padding = [k // 2 for k in kernel_size]
        else:
            padding = kernel_size // 2

        self.in_layers = nn.SequentialCell([
            normalization(channels), SiLU(),
            conv_nd(dims, channels, self.out_channels, kernel_size, padding=padding),
        ])
        self.updown = up or down
        if up:
            self.h_upd = Upsample(channels, False, dims)
            self.x_upd = Upsample(channels, False, dims)
        elif down:
            self.h_upd = Downsample(channels, False, dims)
            self.x_upd = Downsample(channels, False, dims)
        else:
            self.h_upd = self.x_upd = None

        if skip_t_emb:
            if use_scale_shift_norm:
                raise ValueError("skip_t_emb cannot be combined with use_scale_shift_norm")
            self.emb_layers = None
        else:
            emb_out = 2 * self.out_channels if use_scale_shift_norm else self.out_channels
            self.emb_layers = nn.SequentialCell([SiLU(), Linear(emb_channels, emb_out)])

        self.out_layers = nn.SequentialCell([
            normalization(self.out_channels), SiLU(), Identity(),
            conv_nd(dims, self.out_channels, self.out_channels, kernel_size, padding=padding),
        ])
        if self.out_channels == channels:
            self.skip_connection = Identity()
        elif use_conv:
            self.skip_connection = conv_nd(dims, channels, self.out_channels, kernel_size, padding=padding)
        else:
            self.skip_connection = conv_nd(dims, channels, self.out_channels, 1)

    def construct(self, x, emb=None):
        return self.residual(x, emb)

    def residual(self, x, emb):
        # in_layers and out_layers are (GroupNorm, SiLU, ...) as upstream names their parameters;
        # the norm applies the SiLU itself (GroupNorm.then_silu: one pass with the CPU kernel).
        if self.updown:
            h = self.in_layers[0].then_silu(x)
            h = self.h_upd(h)
            x = self.x_upd(x)
            h = self.in_layers[2](h)
        else:
            h = self.in_layers[2](self.in_layers[0].then_silu(x))

        if self.skip_t_emb:
            h = self.out_layers[3](self.out_layers[0].then_silu(h))
        else:
            emb_out = ops.cast(self.emb_layers(emb), h.dtype)
            emb_out = emb_out.reshape(emb_out.shape + (1,) * (h.ndim - emb_out.ndim))
            if self.exchange_temb_dims:
                # (b, t, c, 1, 1) -> (b, c, t, 1, 1)
                emb_out = emb_out.swapaxes(1, 2)
            if self.use_scale_shift_norm:
                scale, shift = ops.chunk(emb_out, 2, axis=1)
                h = self.out_layers[0](h) * (1 + scale) + shift
                h = self.out_layers[1](h)
                h = self.out_layers[3](h)
            else:
                h = self.out_layers[3](self.out_layers[0].then_silu(h + emb_out))
        return self.skip_connection(x) + h


class SpacetimeEmbedSequential(nn.SequentialCell):
    """The SV4D 2.0 counterpart of TimestepEmbedSequential: its blocks (`is_spacetime_block`)
    receive the embedding, the image context, the view conditioning and the frame count."""

    def construct(self, x, emb, context, cond_view, num_video_frames):
        for layer in self.cell_list:
            if getattr(layer, "is_spacetime_block", False):
                x = layer(x, emb, context, cond_view, num_video_frames)
            else:
                x = layer(x)
        return x
