"""Temporal attention of the video UNet and VAE decoder (sgm.modules.video_attention)."""
from typing import Optional

import mindspore as ms
from mindspore import nn, ops

from .attention import CrossAttention, FeedForward, SpatialTransformer
from .diffusionmodules.util import AlphaBlender, timestep_embedding
from .layers import LayerNorm, Linear, SiLU


def frame_index_embedding(batch_frames: int, num_frames: int, dim: int, max_period: int = 10000):
    """Sinusoidal embedding of each frame's index within its video, for (b t) rows."""
    index = ops.arange(num_frames).astype(ms.float32)
    index = ops.tile(index, (batch_frames // num_frames,))
    return timestep_embedding(index, dim, max_period=max_period)


class VideoTransformerBlock(nn.Cell):
    """Attention along the time axis: (b t) s c rows are regrouped into (b s) t c sequences."""

    def __init__(self, dim, n_heads, d_head, dropout=0.0, context_dim=None, gated_ff=True, checkpoint=False,
                 timesteps=None, ff_in=False, inner_dim=None, attn_mode="softmax", disable_self_attn=False,
                 disable_temporal_crossattention=False, switch_temporal_ca_to_sa=False, attention: str = "auto",
                 ff_chunk_size: Optional[int] = None):
        super().__init__()
        self.ff_in_enabled = ff_in or inner_dim is not None
        if inner_dim is None:
            inner_dim = dim
        if n_heads * d_head != inner_dim:
            raise ValueError(f"n_heads * d_head ({n_heads} * {d_head}) must equal inner_dim ({inner_dim})")
        self.is_res = inner_dim == dim
        if self.ff_in_enabled:
            self.norm_in = LayerNorm(dim)
            self.ff_in = FeedForward(dim, dim_out=inner_dim, glu=gated_ff, chunk_size=ff_chunk_size)
        self.timesteps = timesteps
        self.disable_self_attn = disable_self_attn
        self.attn1 = CrossAttention(inner_dim, context_dim=context_dim if disable_self_attn else None,
                                    heads=n_heads, dim_head=d_head, attention=attention)
        self.ff = FeedForward(inner_dim, dim_out=dim, glu=gated_ff, chunk_size=ff_chunk_size)
        self.switch_temporal_ca_to_sa = switch_temporal_ca_to_sa
        if disable_temporal_crossattention:
            if switch_temporal_ca_to_sa:
                raise ValueError("switch_temporal_ca_to_sa needs temporal cross-attention")
            self.attn2 = None
        else:
            self.norm2 = LayerNorm(inner_dim)
            self.attn2 = CrossAttention(inner_dim, context_dim=None if switch_temporal_ca_to_sa else context_dim,
                                        heads=n_heads, dim_head=d_head, attention=attention)
        self.norm1 = LayerNorm(inner_dim)
        self.norm3 = LayerNorm(inner_dim)

    def construct(self, x, context=None, timesteps=None):
        if timesteps is None:
            timesteps = self.timesteps
        bt, s, c = x.shape
        b = bt // timesteps
        x = x.reshape(b, timesteps, s, c).swapaxes(1, 2).reshape(b * s, timesteps, c)

        if self.ff_in_enabled:
            x_skip = x
            x = self.ff_in(self.norm_in(x))
            if self.is_res:
                x = x + x_skip

        if self.disable_self_attn:
            x = self.attn1(self.norm1(x), context) + x
        else:
            x = self.attn1(self.norm1(x)) + x

        if self.attn2 is not None:
            if self.switch_temporal_ca_to_sa:
                x = self.attn2(self.norm2(x)) + x
            else:
                x = self.attn2(self.norm2(x), context) + x

        x_skip = x
        x = self.ff(self.norm3(x))
        if self.is_res:
            x = x + x_skip
        c_out = x.shape[-1]
        return x.reshape(b, s, timesteps, c_out).swapaxes(1, 2).reshape(bt, s, c_out)


class SpatialVideoTransformer(SpatialTransformer):
    """Spatial transformer whose every block is followed by a temporal block, blended by a learned alpha."""

    is_timestep_block = True

    def __init__(self, in_channels, n_heads, d_head, depth=1, dropout=0.0, use_linear=False, context_dim=None,
                 use_spatial_context=False, timesteps=None, merge_strategy: str = "fixed", merge_factor: float = 0.5,
                 time_context_dim=None, ff_in=False, checkpoint=False, time_depth=1, attn_mode="softmax",
                 disable_self_attn=False, disable_temporal_crossattention=False, max_time_embed_period: int = 10000,
                 attention: str = "auto", ff_chunk_size: Optional[int] = None):
        super().__init__(in_channels, n_heads, d_head, depth=depth, dropout=dropout, context_dim=context_dim,
                         disable_self_attn=disable_self_attn, use_linear=use_linear, attention=attention,
                         ff_chunk_size=ff_chunk_size)
        self.max_time_embed_period = max_time_embed_period
        inner_dim = n_heads * d_head
        if use_spatial_context:
            time_context_dim = context_dim
        self.time_stack = nn.CellList([
            VideoTransformerBlock(inner_dim, n_heads, d_head, context_dim=time_context_dim, timesteps=timesteps,
                                  ff_in=ff_in, inner_dim=inner_dim, disable_self_attn=disable_self_attn,
                                  disable_temporal_crossattention=disable_temporal_crossattention,
                                  attention=attention, ff_chunk_size=ff_chunk_size)
            for _ in range(depth)
        ])
        self.use_spatial_context = use_spatial_context
        time_embed_dim = in_channels * 4
        self.time_pos_embed = nn.SequentialCell([Linear(in_channels, time_embed_dim), SiLU(),
                                                 Linear(time_embed_dim, in_channels)])
        self.time_mixer = AlphaBlender(alpha=merge_factor, merge_strategy=merge_strategy)

    def construct(self, x, emb=None, context=None, image_only_indicator=None, num_video_frames=None,
                  time_context=None):
        timesteps = num_video_frames
        bt, _, h, w = x.shape
        x_in = x
        spatial_context = context
        if self.use_spatial_context:
            # Every frame of a video shares the first frame's context; one copy per pixel.
            first = context[::timesteps]
            b = first.shape[0]
            time_context = ops.broadcast_to(first[:, None], (b, h * w) + first.shape[1:])
            time_context = time_context.reshape((b * h * w,) + first.shape[1:])
        elif time_context is not None:
            if time_context.ndim == 2:
                time_context = time_context[:, None]
            time_context = ops.repeat_interleave(time_context, h * w, 0)

        x = self.to_tokens(x)
        frame_emb = self.time_pos_embed(
            frame_index_embedding(bt, timesteps, self.in_channels, self.max_time_embed_period))
        frame_emb = ops.cast(frame_emb, x.dtype)[:, None, :]

        for block, mix_block in zip(self.transformer_blocks, self.time_stack):
            x = block(x, spatial_context)
            x_mix = mix_block(x + frame_emb, time_context, timesteps)
            x = self.time_mixer(x, x_mix, image_only_indicator)
        return self.from_tokens(x, h, w) + x_in
