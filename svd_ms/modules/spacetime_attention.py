"""Attention over space, views and time of the SV4D 2.0 UNet (sgm.modules.spacetime_attention).

A chunk of SV4D 2.0 is T frames x V views, laid out t-major: rows (b, t, v). Each transformer
block runs spatial attention per image, then "camera" attention that mixes views and then
"motion" attention that mixes frames, each blended back with a learned alpha.

Upstream's arrangement is copied as it is, because the checkpoints were trained with it:
- the camera embedding is the UNet's time-plus-vector embedding `emb` (the model passes it into
  the `cam` slot), taken at frame 0 of each view;
- with `use_3d_attention` the camera block receives (b v hw, t, c) rows with `timesteps=v`, so
  its regrouping pairs runs of v neighbouring pixels of one view, not the views of one pixel; its
  context is matched to those rows by count only;
- the motion blocks cross-attend to `cond_view` resized bilinearly to the level's size.
"""
import mindspore as ms
from mindspore import nn, ops

from .attention import SpatialTransformer
from .diffusionmodules.util import AlphaBlender
from .layers import Linear, SiLU
from .video_attention import VideoTransformerBlock, frame_index_embedding


class BasicTransformerTimeMixBlock(VideoTransformerBlock):
    """Attention along an axis of (b t) s c rows regrouped to (b s) t c: the same block (and
    parameter names) as the video UNet's temporal block."""


def _embedder(in_channels: int, hidden: int, out_channels: int) -> nn.SequentialCell:
    return nn.SequentialCell([Linear(in_channels, hidden), SiLU(), Linear(hidden, out_channels)])


class PostHocSpatialTransformerWithTimeMixingAndMotion(SpatialTransformer):
    """Spatial transformer whose every block is followed by view (camera) and frame (motion)
    attention. Only upstream's SV4D 2.0 settings are built: `time_mix_legacy=False` (AlphaBlender
    mixers) and the spatial context shared by the camera blocks."""

    is_spacetime_block = True

    def __init__(self, in_channels, n_heads, d_head, depth=1, dropout=0.0, use_linear=False, context_dim=None,
                 use_spatial_context=False, use_camera_emb=False, use_3d_attention=False,
                 separate_motion_merge_factor=False, adm_in_channels=None, timesteps=None,
                 merge_strategy: str = "fixed", merge_factor: float = 0.5, merge_factor_motion: float = 0.5,
                 apply_sigmoid_to_merge: bool = True, time_context_dim=None, motion_context_dim=None, ff_in=False,
                 checkpoint=False, time_depth=1, attn_mode="softmax", disable_self_attn=False,
                 disable_temporal_crossattention=False, time_mix_legacy: bool = True,
                 max_time_embed_period: int = 10000, attention: str = "auto", ff_chunk_size=None):
        if time_mix_legacy:
            raise ValueError("PostHocSpatialTransformerWithTimeMixingAndMotion: only time_mix_legacy=False "
                             "(the SV4D 2.0 setting) is supported")
        super().__init__(in_channels, n_heads, d_head, depth=depth, dropout=dropout, context_dim=context_dim,
                         disable_self_attn=disable_self_attn, use_linear=use_linear, attention=attention,
                         ff_chunk_size=ff_chunk_size)
        self.max_time_embed_period = max_time_embed_period
        self.use_camera_emb = use_camera_emb
        self.use_3d_attention = use_3d_attention
        self.separate_motion_merge_factor = separate_motion_merge_factor
        inner_dim = n_heads * d_head
        if use_spatial_context:
            time_context_dim = context_dim

        def mix_blocks(block_context_dim):
            return nn.CellList([
                BasicTransformerTimeMixBlock(inner_dim, n_heads, d_head, context_dim=block_context_dim,
                                             timesteps=timesteps, ff_in=ff_in, inner_dim=inner_dim,
                                             disable_self_attn=disable_self_attn,
                                             disable_temporal_crossattention=disable_temporal_crossattention,
                                             attention=attention, ff_chunk_size=ff_chunk_size)
                for _ in range(depth)])

        self.time_mix_blocks = mix_blocks(time_context_dim)  # camera (view) attention
        self.motion_blocks = mix_blocks(motion_context_dim)  # motion (frame) attention
        hidden = in_channels * 4
        camera_in = adm_in_channels if use_camera_emb else in_channels
        self.time_mix_time_embed = _embedder(camera_in, hidden, in_channels)
        self.time_mix_motion_embed = _embedder(in_channels, hidden, in_channels)
        self.time_mixer = AlphaBlender(alpha=merge_factor, merge_strategy=merge_strategy)
        self.time_mixer_motion = (AlphaBlender(alpha=merge_factor_motion, merge_strategy=merge_strategy)
                                  if separate_motion_merge_factor else None)

    def view_embedding(self, cam, b, t, v):
        """(b v, 1, c): the camera embedding of each view (rows of frame 0 of `cam`), or the
        sinusoidal embedding of the view index without a camera embedding."""
        if self.use_camera_emb:
            first_frame = cam.reshape(b, t, v, cam.shape[-1])[:, 0].reshape(b * v, cam.shape[-1])
            return self.time_mix_time_embed(first_frame)[:, None, :]
        index_emb = frame_index_embedding(b * v, v, self.in_channels, self.max_time_embed_period)
        return self.time_mix_time_embed(index_emb)[:, None, :]

    def construct(self, x, cam, context, cond_view, num_video_frames=None):
        """x: (b t v, c, h, w); cam: (b t v, adm); context: (b, t, d); cond_view: (b v, d2, H, W)."""
        b, t, d1 = context.shape
        v = cond_view.shape[0] // b
        _, c, h, w = x.shape
        hw = h * w
        x_in = x

        cond_view = ops.interpolate(ops.cast(cond_view, ms.float32), size=(h, w), mode="bilinear",
                                    align_corners=False)
        spatial_context = ops.broadcast_to(context[:, :, None], (b, t, v, d1)).reshape(b * t * v, 1, d1)
        camera_context = ops.broadcast_to(context[:, :, None], (b, t, hw, d1)).reshape(b * t * hw, 1, d1)
        motion_context = cond_view.transpose(0, 2, 3, 1).reshape(b * v * hw, 1, cond_view.shape[1])

        x = self.to_tokens(x)
        frame_emb = self.time_mix_motion_embed(
            frame_index_embedding(b * t, t, self.in_channels, self.max_time_embed_period))
        frame_emb = ops.cast(frame_emb, x.dtype)[:, None, :]
        view_emb = ops.cast(self.view_embedding(cam, b, t, v), x.dtype)
        if self.use_3d_attention:
            view_emb = ops.repeat_interleave(view_emb, hw, 0)

        for block, view_block, motion_block in zip(self.transformer_blocks, self.time_mix_blocks,
                                                   self.motion_blocks):
            x = block(x, spatial_context)
            cc = x.shape[-1]
            # camera attention
            x = x.reshape(b, t, v, hw, cc)
            if self.use_3d_attention:
                x = x.transpose(0, 2, 3, 1, 4).reshape(b * v * hw, t, cc)
            else:
                x = x.transpose(0, 2, 1, 3, 4).reshape(b * v, t * hw, cc)
            x_mix = view_block(x + view_emb, camera_context, v)
            x = self.time_mixer(x, x_mix, ops.zeros((1, x.shape[0]), ms.float32))
            # motion attention
            if self.use_3d_attention:
                x = x.reshape(b, v, hw, t, cc).transpose(0, 3, 1, 2, 4)
            else:
                x = x.reshape(b, v, t, hw, cc).transpose(0, 2, 1, 3, 4)
            x = x.reshape(b * t, v * hw, cc)
            x_mix = motion_block(x + frame_emb, motion_context, t)
            motion_mixer = self.time_mixer_motion if self.separate_motion_merge_factor else self.time_mixer
            x = motion_mixer(x, x_mix, ops.zeros((1, x.shape[0]), ms.float32))
            x = x.reshape(b * t * v, hw, cc)

        return self.from_tokens(x, h, w) + x_in
