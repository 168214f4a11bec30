"""The temporal VAE decoder of SVD (sgm.modules.autoencoding.temporal_ae).

Each block decodes frames independently, then mixes along time: a 3-D ResBlock after every
ResnetBlock and a (3, 1, 1) convolution after the output convolution.
"""
from functools import partial

import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops

from ..diffusionmodules.model import AttnBlock, Decoder, ResnetBlock, make_attn
from ..diffusionmodules.openaimodel import ResBlock
from ..diffusionmodules.util import frames_to_video, video_to_frames
from ..layers import Conv2d, Conv3d, Linear, SiLU
from ..video_attention import VideoTransformerBlock, frame_index_embedding


class _LearnedMix(nn.Cell):
    """alpha * temporal + (1 - alpha) * spatial, alpha = sigmoid(mix_factor) or a fixed value."""

    def _init_mix(self, alpha, merge_strategy):
        if merge_strategy not in ("fixed", "learned"):
            raise ValueError(f"unknown merge strategy '{merge_strategy}'")
        self.merge_strategy = merge_strategy
        self.mix_factor = Parameter(Tensor([alpha], ms.float32), name="mix_factor",
                                    requires_grad=merge_strategy == "learned")

    def get_alpha(self):
        if self.merge_strategy == "fixed":
            return self.mix_factor
        return ops.sigmoid(self.mix_factor)


class VideoResBlock(ResnetBlock, _LearnedMix):
    def __init__(self, out_channels, *args, dropout=0.0, video_kernel_size=3, alpha=0.0, merge_strategy="learned",
                 **kwargs):
        super().__init__(*args, out_channels=out_channels, dropout=dropout, **kwargs)
        if video_kernel_size is None:
            video_kernel_size = [3, 1, 1]
        self.time_stack = ResBlock(out_channels, 0, dropout=dropout, dims=3, kernel_size=video_kernel_size,
                                   skip_t_emb=True)
        self._init_mix(alpha, merge_strategy)

    def construct(self, x, temb=None, timesteps=None):
        x = self.residual(x, temb)
        spatial = frames_to_video(x, timesteps)
        temporal = self.time_stack(spatial)
        alpha = ops.cast(self.get_alpha(), x.dtype)
        return video_to_frames(alpha * temporal + (1.0 - alpha) * spatial)


class AE3DConv(Conv2d):
    """A per-frame 2-D convolution followed by a convolution along time."""

    def __init__(self, in_channels, out_channels, video_kernel_size=3, *args, **kwargs):
        super().__init__(in_channels, out_channels, *args, **kwargs)
        if isinstance(video_kernel_size, (list, tuple)):
            padding = [int(k // 2) for k in video_kernel_size]
        else:
            padding = int(video_kernel_size // 2)
        self.time_mix_conv = Conv3d(out_channels, out_channels, video_kernel_size, padding=padding)

    def construct(self, x, timesteps=None):
        x = self.conv2d(x)
        return video_to_frames(self.time_mix_conv(frames_to_video(x, timesteps)))


class VideoBlock(AttnBlock, _LearnedMix):
    """Spatial self-attention plus a single-head temporal transformer, blended by alpha."""

    def __init__(self, in_channels: int, alpha: float = 0, merge_strategy: str = "learned"):
        super().__init__(in_channels)
        self.time_mix_block = VideoTransformerBlock(dim=in_channels, n_heads=1, d_head=in_channels, ff_in=True)
        time_embed_dim = in_channels * 4
        self.video_time_embed = nn.SequentialCell([Linear(in_channels, time_embed_dim), SiLU(),
                                                   Linear(time_embed_dim, in_channels)])
        self._init_mix(alpha, merge_strategy)

    def construct(self, x, timesteps=None):
        x_in = x
        x = self.attention(x)
        bt, c, h, w = x.shape
        x = x.reshape(bt, c, h * w).swapaxes(1, 2)
        emb = self.video_time_embed(frame_index_embedding(bt, timesteps, self.in_channels))
        x_mix = self.time_mix_block(x + emb[:, None, :], None, timesteps)
        alpha = ops.cast(self.get_alpha(), x.dtype)
        x = alpha * x + (1.0 - alpha) * x_mix
        x = x.swapaxes(1, 2).reshape(bt, c, h, w)
        return x_in + self.proj_out(x)


class VideoDecoder(Decoder):
    available_time_modes = ("all", "conv-only", "attn-only")

    def __init__(self, *args, video_kernel_size=3, alpha: float = 0.0, merge_strategy: str = "learned",
                 time_mode: str = "conv-only", **kwargs):
        if time_mode not in self.available_time_modes:
            raise ValueError(f"time_mode must be one of {self.available_time_modes}, got '{time_mode}'")
        self.video_kernel_size = video_kernel_size
        self.alpha = alpha
        self.merge_strategy = merge_strategy
        self.time_mode = time_mode
        self.conv_out_takes_timesteps = time_mode != "attn-only"
        super().__init__(*args, **kwargs)

    def _make_attn(self):
        if self.time_mode == "conv-only":
            return make_attn

        def video_attn(in_channels, attn_type="vanilla"):
            if attn_type not in ("vanilla", "vanilla-xformers"):
                raise ValueError(f"attn_type '{attn_type}' is not supported for spatio-temporal attention")
            return VideoBlock(in_channels, alpha=self.alpha, merge_strategy=self.merge_strategy)
        return video_attn

    def _make_conv(self):
        if self.time_mode == "attn-only":
            return Conv2d
        return partial(AE3DConv, video_kernel_size=self.video_kernel_size)

    def _make_resblock(self):
        if self.time_mode == "attn-only":
            return ResnetBlock
        return partial(VideoResBlock, video_kernel_size=self.video_kernel_size, alpha=self.alpha,
                       merge_strategy=self.merge_strategy)
