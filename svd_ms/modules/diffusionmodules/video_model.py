"""The VideoLDM UNet of Stable Video Diffusion (sgm.modules.diffusionmodules.video_model)."""
from typing import List, Optional, Union

import mindspore as ms
from mindspore import nn, ops

from ..layers import Linear, SiLU, conv_nd
from ..spacetime_attention import PostHocSpatialTransformerWithTimeMixingAndMotion
from ..video_attention import SpatialVideoTransformer
from .openaimodel import (Downsample, ResBlock, SpacetimeEmbedSequential, TimestepEmbedSequential, Upsample,
                          normalization)
from .util import AlphaBlender, Timestep, frames_to_video, timestep_embedding, video_to_frames


class VideoResBlock(ResBlock):
    """A 2-D ResBlock per frame, then a 3-D ResBlock across frames, blended by AlphaBlender."""

    is_timestep_block = True

    def __init__(self, channels: int, emb_channels: int, dropout: float, video_kernel_size=3,
                 merge_strategy: str = "fixed", merge_factor: float = 0.5, out_channels: Optional[int] = None,
                 use_conv: bool = False, use_scale_shift_norm: bool = False, dims: int = 2,
                 use_checkpoint: bool = False, up: bool = False, down: bool = False):
        super().__init__(channels, emb_channels, dropout, out_channels=out_channels, use_conv=use_conv,
                         use_scale_shift_norm=use_scale_shift_norm, dims=dims, up=up, down=down)
        out = out_channels or channels
        self.time_stack = ResBlock(out, emb_channels, dropout=dropout, dims=3, out_channels=out,
                                   use_scale_shift_norm=False, use_conv=False, kernel_size=video_kernel_size,
                                   exchange_temb_dims=True)
        self.time_mixer = AlphaBlender(alpha=merge_factor, merge_strategy=merge_strategy, video_axes=True)

    def construct(self, x, emb, context=None, image_only_indicator=None, num_video_frames=None):
        x = self.residual(x, emb)
        x = frames_to_video(x, num_video_frames)
        b, t = x.shape[0], num_video_frames
        temporal = self.time_stack(x, emb.reshape((b, t) + emb.shape[1:]))
        x = self.time_mixer(x, temporal, image_only_indicator)
        return video_to_frames(x)


class UNetBlocks(nn.Cell):
    """The level layout shared by the video UNets (input blocks, middle block, output blocks with
    skip connections), built from the model's own resblock / attention / sequence types."""

    def build_blocks(self, sequential, resblock, attention_layer, in_channels, model_channels, num_res_blocks,
                     attention_resolutions, channel_mult, transformer_depth, transformer_depth_middle, dims,
                     conv_resample, resblock_updown, time_downup):
        input_blocks = [sequential([conv_nd(dims, in_channels, model_channels, 3, padding=1)])]
        input_block_chans = [model_channels]
        ch = model_channels
        ds = 1
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers = [resblock(ch, mult * model_channels)]
                ch = mult * model_channels
                if ds in attention_resolutions:
                    layers.append(attention_layer(ch, transformer_depth[level]))
                input_blocks.append(sequential(layers))
                input_block_chans.append(ch)
            if level != len(channel_mult) - 1:
                ds *= 2
                down = (resblock(ch, ch, down=True) if resblock_updown
                        else Downsample(ch, conv_resample, dims=dims, out_channels=ch, third_down=time_downup))
                input_blocks.append(sequential([down]))
                input_block_chans.append(ch)
        self.input_blocks = nn.CellList(input_blocks)

        self.middle_block = sequential([
            resblock(ch, None), attention_layer(ch, transformer_depth_middle), resblock(ch, None)])

        output_blocks = []
        for level, mult in list(enumerate(channel_mult))[::-1]:
            for i in range(num_res_blocks + 1):
                skip_ch = input_block_chans.pop()
                layers = [resblock(ch + skip_ch, model_channels * mult)]
                ch = model_channels * mult
                if ds in attention_resolutions:
                    layers.append(attention_layer(ch, transformer_depth[level]))
                if level and i == num_res_blocks:
                    ds //= 2
                    layers.append(resblock(ch, ch, up=True) if resblock_updown
                                  else Upsample(ch, conv_resample, dims=dims, out_channels=ch, third_up=time_downup))
                output_blocks.append(sequential(layers))
        self.output_blocks = nn.CellList(output_blocks)

    def run_blocks(self, x, emb, first, second, num_video_frames):
        """Every block in order; each gets (features, emb, first, second, num_video_frames)."""
        h, skips = self.down(x, emb, first, second, num_video_frames, len(self.input_blocks))
        h = self.middle_block(h, emb, first, second, num_video_frames)
        return self.up(h, skips, emb, first, second, num_video_frames, 0, len(self.output_blocks))

    # The two halves of run_blocks; DeepCache (deepcache.py) runs parts of them.
    def down(self, x, emb, first, second, num_video_frames, stop: int):
        """Input blocks 0 .. stop-1; returns the last output and every block's output (the skips)."""
        h = x
        skips = ()
        for index in range(stop):
            h = self.input_blocks[index](h, emb, first, second, num_video_frames)
            skips = skips + (h,)
        return h, skips

    def up(self, h, skips, emb, first, second, num_video_frames, start: int, stop: int):
        """Output blocks start .. stop-1, output block i joining the skip of input block N-1-i."""
        index = len(self.input_blocks) - 1 - start
        for block in range(start, stop):
            h = ops.cat([h, ops.cast(skips[index], h.dtype)], axis=1)
            h = self.output_blocks[block](h, emb, first, second, num_video_frames)
            index -= 1
        return h


class VideoUNet(UNetBlocks):
    def __init__(self, in_channels: int, model_channels: int, out_channels: int, num_res_blocks: int,
                 attention_resolutions, dropout: float = 0.0, channel_mult=(1, 2, 4, 8), conv_resample: bool = True,
                 dims: int = 2, num_classes: Optional[Union[int, str]] = None, use_checkpoint: bool = False,
                 num_heads: int = -1, num_head_channels: int = -1, num_heads_upsample: int = -1,
                 use_scale_shift_norm: bool = False, resblock_updown: bool = False,
                 transformer_depth: Union[List[int], int] = 1, transformer_depth_middle: Optional[int] = None,
                 context_dim: Optional[int] = None, time_downup: bool = False, time_context_dim: Optional[int] = None,
                 extra_ff_mix_layer: bool = False, use_spatial_context: bool = False,
                 merge_strategy: str = "fixed", merge_factor: float = 0.5,
                 spatial_transformer_attn_type: str = "softmax", video_kernel_size=3,
                 use_linear_in_transformer: bool = False, adm_in_channels: Optional[int] = None,
                 disable_temporal_crossattention: bool = False, max_ddpm_temb_period: int = 10000,
                 attention: str = "auto", ff_chunk_size: Optional[int] = None):
        super().__init__()
        if context_dim is None:
            raise ValueError("VideoUNet needs context_dim")
        if num_heads == -1 and num_head_channels == -1:
            raise ValueError("VideoUNet needs num_heads or num_head_channels")
        if isinstance(transformer_depth, int):
            transformer_depth = len(channel_mult) * [transformer_depth]
        if transformer_depth_middle is None:
            transformer_depth_middle = transformer_depth[-1]

        self.in_channels = in_channels
        self.model_channels = model_channels
        self.out_channels = out_channels
        self.num_classes = num_classes
        time_embed_dim = model_channels * 4
        self.time_embed = nn.SequentialCell([Linear(model_channels, time_embed_dim), SiLU(),
                                             Linear(time_embed_dim, time_embed_dim)])
        if num_classes is None:
            self.label_emb = None
        elif isinstance(num_classes, int):
            self.label_emb = nn.Embedding(num_classes, time_embed_dim)
        elif num_classes == "continuous":
            self.label_emb = Linear(1, time_embed_dim)
        elif num_classes == "timestep":
            self.label_emb = nn.SequentialCell([
                Timestep(model_channels),
                nn.SequentialCell([Linear(model_channels, time_embed_dim), SiLU(),
                                   Linear(time_embed_dim, time_embed_dim)]),
            ])
        elif num_classes == "sequential":
            if adm_in_channels is None:
                raise ValueError("num_classes 'sequential' needs adm_in_channels")
            self.label_emb = nn.SequentialCell([nn.SequentialCell([
                Linear(adm_in_channels, time_embed_dim), SiLU(), Linear(time_embed_dim, time_embed_dim)])])
        else:
            raise ValueError(f"unknown num_classes '{num_classes}'")

        def heads_for(ch):
            if num_head_channels == -1:
                return num_heads, ch // num_heads
            return ch // num_head_channels, num_head_channels

        def attention_layer(ch, depth):
            n_heads, d_head = heads_for(ch)
            return SpatialVideoTransformer(
                ch, n_heads, d_head, depth=depth, context_dim=context_dim, time_context_dim=time_context_dim,
                dropout=dropout, ff_in=extra_ff_mix_layer, use_spatial_context=use_spatial_context,
                merge_strategy=merge_strategy, merge_factor=merge_factor, use_linear=use_linear_in_transformer,
                disable_temporal_crossattention=disable_temporal_crossattention,
                max_time_embed_period=max_ddpm_temb_period, attention=attention, ff_chunk_size=ff_chunk_size)

        def resblock(ch, out_ch, down=False, up=False):
            return VideoResBlock(ch, time_embed_dim, dropout, video_kernel_size=video_kernel_size,
                                 merge_strategy=merge_strategy, merge_factor=merge_factor, out_channels=out_ch,
                                 dims=dims, use_scale_shift_norm=use_scale_shift_norm, down=down, up=up)

        self.build_blocks(TimestepEmbedSequential, resblock, attention_layer, in_channels, model_channels,
                          num_res_blocks, attention_resolutions, channel_mult, transformer_depth,
                          transformer_depth_middle, dims, conv_resample, resblock_updown, time_downup)
        ch = model_channels * channel_mult[0]
        self.out = nn.SequentialCell([normalization(ch), SiLU(),
                                      conv_nd(dims, model_channels, out_channels, 3, padding=1)])

    def construct(self, x, timesteps, context=None, y=None, time_context=None, num_video_frames=None,
                  image_only_indicator=None):
        emb = self.embed(timesteps, y)
        return self.out(self.run_blocks(x, emb, context, image_only_indicator, num_video_frames))

    def embed(self, timesteps, y):
        """The time embedding plus the vector conditioning's."""
        emb = self.time_embed(timestep_embedding(timesteps, self.model_channels))
        if self.label_emb is not None:
            emb = emb + ops.cast(self.label_emb(y), emb.dtype)
        return emb


# ---- SV4D 2.0 -------------------------------------------------------------------------------

class PostHocResBlockWithTime(ResBlock):
    """A 2-D ResBlock per image, then a 3-D ResBlock across the T*V images of a chunk taken as
    one sequence, blended by AlphaBlender as if no image were image-only (upstream multiplies the
    indicator by 0)."""

    is_spacetime_block = True

    def __init__(self, channels: int, emb_channels: int, dropout: float, time_kernel_size=3,
                 merge_strategy: str = "fixed", merge_factor: float = 0.5, apply_sigmoid_to_merge: bool = True,
                 out_channels: Optional[int] = None, use_conv: bool = False, use_scale_shift_norm: bool = False,
                 dims: int = 2, use_checkpoint: bool = False, up: bool = False, down: bool = False,
                 time_mix_legacy: bool = True, replicate_bug: bool = False):
        if time_mix_legacy:
            raise ValueError("PostHocResBlockWithTime: only time_mix_legacy=False (the SV4D 2.0 setting) "
                             "is supported")
        super().__init__(channels, emb_channels, dropout, out_channels=out_channels, use_conv=use_conv,
                         use_scale_shift_norm=use_scale_shift_norm, dims=dims, up=up, down=down)
        out = out_channels or channels
        self.time_mix_blocks = ResBlock(out, emb_channels, dropout=dropout, dims=3, out_channels=out,
                                        use_scale_shift_norm=False, use_conv=False, kernel_size=time_kernel_size,
                                        exchange_temb_dims=True)
        self.time_mixer = AlphaBlender(alpha=merge_factor, merge_strategy=merge_strategy, video_axes=True)

    def construct(self, x, emb, context=None, cond_view=None, num_video_frames=None):
        x = self.residual(x, emb)
        x = frames_to_video(x, num_video_frames)
        b, t = x.shape[0], num_video_frames
        temporal = self.time_mix_blocks(x, emb.reshape((b, t) + emb.shape[1:]))
        x = self.time_mixer(x, temporal, ops.zeros((b, t), ms.float32))
        return video_to_frames(x)


class SpatialUNetModelWithTime(UNetBlocks):
    """The SV4D 2.0 UNet: PostHocResBlockWithTime blocks and spatial/camera/motion transformers.
    Built for upstream's SV4D 2.0 settings (spatial transformers with motion attention, the
    AlphaBlender mixers, a 'sequential' vector embedding); other settings raise ValueError."""

    def __init__(self, in_channels: int, model_channels: int, out_channels: int, num_res_blocks: int,
                 attention_resolutions, dropout: float = 0.0, channel_mult=(1, 2, 4, 8), conv_resample: bool = True,
                 dims: int = 2, num_classes=None, use_checkpoint: bool = False, num_heads: int = -1,
                 num_head_channels: int = -1, num_heads_upsample: int = -1, use_scale_shift_norm: bool = False,
                 resblock_updown: bool = False, use_new_attention_order: bool = False,
                 use_spatial_transformer: bool = False, transformer_depth: Union[List[int], int] = 1,
                 transformer_depth_middle: Optional[int] = None, context_dim: Optional[int] = None,
                 time_downup: bool = False, time_context_dim: Optional[int] = None,
                 view_context_dim: Optional[int] = None, motion_context_dim: Optional[int] = None,
                 extra_ff_mix_layer: bool = False, use_spatial_context: bool = False,
                 time_block_merge_strategy: str = "fixed", time_block_merge_factor: float = 0.5,
                 view_block_merge_factor: float = 0.5, motion_block_merge_factor: float = 0.5,
                 spatial_transformer_attn_type: str = "softmax", time_kernel_size=3,
                 use_linear_in_transformer: bool = False, legacy: bool = True, adm_in_channels: Optional[int] = None,
                 use_temporal_resblock: bool = True, disable_temporal_crossattention: bool = False,
                 time_mix_legacy: bool = True, max_ddpm_temb_period: int = 10000,
                 replicate_time_mix_bug: bool = False, use_motion_attention: bool = False,
                 use_camera_emb: bool = False, use_3d_attention: bool = False,
                 separate_motion_merge_factor: bool = False, attention: str = "auto", ff_chunk_size=None):
        super().__init__()
        if not (use_spatial_transformer and use_motion_attention and use_temporal_resblock):
            raise ValueError("SpatialUNetModelWithTime: only the SV4D 2.0 layout (use_spatial_transformer, "
                             "use_motion_attention, use_temporal_resblock) is supported")
        if context_dim is None or num_classes != "sequential" or adm_in_channels is None:
            raise ValueError("SpatialUNetModelWithTime needs context_dim, num_classes 'sequential' and "
                             "adm_in_channels")
        if legacy or num_head_channels == -1:
            raise ValueError("SpatialUNetModelWithTime: only legacy=False with num_head_channels is supported")
        if isinstance(transformer_depth, int):
            transformer_depth = len(channel_mult) * [transformer_depth]
        if transformer_depth_middle is None:
            transformer_depth_middle = transformer_depth[-1]
        self.model_channels = model_channels
        time_embed_dim = model_channels * 4
        self.time_embed = nn.SequentialCell([Linear(model_channels, time_embed_dim), SiLU(),
                                             Linear(time_embed_dim, time_embed_dim)])
        self.label_emb = nn.SequentialCell([nn.SequentialCell([
            Linear(adm_in_channels, time_embed_dim), SiLU(), Linear(time_embed_dim, time_embed_dim)])])

        def attention_layer(ch, depth):
            return PostHocSpatialTransformerWithTimeMixingAndMotion(
                ch, ch // num_head_channels, num_head_channels, depth=depth, context_dim=context_dim,
                time_context_dim=time_context_dim, motion_context_dim=motion_context_dim, dropout=dropout,
                ff_in=extra_ff_mix_layer, use_spatial_context=use_spatial_context, use_camera_emb=use_camera_emb,
                use_3d_attention=use_3d_attention, separate_motion_merge_factor=separate_motion_merge_factor,
                adm_in_channels=adm_in_channels, merge_strategy=time_block_merge_strategy,
                merge_factor=time_block_merge_factor, merge_factor_motion=motion_block_merge_factor,
                use_linear=use_linear_in_transformer, disable_temporal_crossattention=disable_temporal_crossattention,
                time_mix_legacy=time_mix_legacy, max_time_embed_period=max_ddpm_temb_period, attention=attention,
                ff_chunk_size=ff_chunk_size)

        def resblock(ch, out_ch, down=False, up=False):
            return PostHocResBlockWithTime(ch, time_embed_dim, dropout, time_kernel_size=time_kernel_size,
                                           merge_strategy=time_block_merge_strategy,
                                           merge_factor=time_block_merge_factor, out_channels=out_ch, dims=dims,
                                           use_scale_shift_norm=use_scale_shift_norm, down=down, up=up,
                                           time_mix_legacy=time_mix_legacy)

        self.build_blocks(SpacetimeEmbedSequential, resblock, attention_layer, in_channels, model_channels,
                          num_res_blocks, attention_resolutions, channel_mult, transformer_depth,
                          transformer_depth_middle, dims, conv_resample, resblock_updown, time_downup)
        ch = model_channels * channel_mult[0]
        self.out = nn.SequentialCell([normalization(ch), SiLU(),
                                      conv_nd(dims, model_channels, out_channels, 3, padding=1)])

    def construct(self, x, timesteps, context, y, cond_view, num_video_frames):
        """x: (b T*V, in, h, w) t-major; context: (b, T, d); y: (b T*V, adm); cond_view:
        (b V, 4, h, w). `cond_motion` and `image_only_indicator` of upstream's signature change
        nothing there and are not taken."""
        emb = self.time_embed(timestep_embedding(timesteps, self.model_channels))
        emb = emb + ops.cast(self.label_emb(y), emb.dtype)
        return self.out(self.run_blocks(x, emb, context, cond_view, num_video_frames))
