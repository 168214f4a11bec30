"""Sinusoidal embeddings and the learned spatial/temporal blend (sgm.modules.diffusionmodules.util)."""
import math

import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops
import numpy as np


def timestep_embedding(timesteps, dim: int, max_period: int = 10000, repeat_only: bool = False):
    """(N,) -> (N, dim) cosine-then-sine embedding, always computed in float32."""
    t = ops.cast(timesteps, ms.float32)
    if repeat_only:
        return ops.broadcast_to(t[:, None], (t.shape[0], dim))
    half = dim // 2
    freqs = Tensor(np.exp(-math.log(max_period) * np.arange(half, dtype=np.float32) / half), ms.float32)
    args = t[:, None] * freqs[None]
    embedding = ops.cat([ops.cos(args), ops.sin(args)], axis=-1)
    if dim % 2:
        embedding = ops.cat([embedding, ops.zeros_like(embedding[:, :1])], axis=-1)
    return embedding


def frames_to_video(x, num_frames: int):
    """(b t) c h w -> b c t h w, made contiguous once: in PyNative every consumer of a strided view
    copies it again (MindSpore's Contiguous kernel), and a temporal block reads it three times (its
    norm, its skip connection and the blend); one copy here took a 4x128 VAE decode from 7.12 to
    6.44 s (docs/performance.md)."""
    bt, c, h, w = x.shape
    return x.reshape(bt // num_frames, num_frames, c, h, w).swapaxes(1, 2).contiguous()


def video_to_frames(x):
    """b c t h w -> (b t) c h w"""
    b, c, t, h, w = x.shape
    return x.swapaxes(1, 2).reshape(b * t, c, h, w)


class Timestep(nn.Cell):
    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def construct(self, t):
        return timestep_embedding(t, self.dim)


class AlphaBlender(nn.Cell):
    """Mixes a spatial and a temporal branch: alpha * spatial + (1 - alpha) * temporal.

    With 'learned_with_images', frames flagged in `image_only_indicator` take the spatial branch
    alone. The blend is computed in float32.
    """

    strategies = ("learned", "fixed", "learned_with_images")

    def __init__(self, alpha: float, merge_strategy: str = "learned_with_images", video_axes: bool = False):
        super().__init__()
        if merge_strategy not in self.strategies:
            raise ValueError(f"merge_strategy must be one of {self.strategies}, got '{merge_strategy}'")
        self.merge_strategy = merge_strategy
        # video_axes: inputs are (b, c, t, h, w); otherwise ((b t), tokens, c).
        self.video_axes = video_axes
        self.mix_factor = Parameter(Tensor([alpha], ms.float32), name="mix_factor",
                                    requires_grad=merge_strategy != "fixed")

    def get_alpha(self, image_only_indicator):
        if self.merge_strategy == "fixed":
            return self.mix_factor
        learned = ops.sigmoid(self.mix_factor)
        if self.merge_strategy == "learned":
            return learned
        ioi = ops.cast(image_only_indicator, ms.float32)  # (b, t)
        alpha = ioi + (1.0 - ioi) * learned
        b, t = alpha.shape
        if self.video_axes:
            return alpha.reshape(b, 1, t, 1, 1)
        return alpha.reshape(b * t, 1, 1)

    def construct(self, x_spatial, x_temporal, image_only_indicator=None):
        alpha = self.get_alpha(image_only_indicator)
        dtype = x_spatial.dtype
        mixed = alpha * ops.cast(x_spatial, ms.float32) + (1.0 - alpha) * ops.cast(x_temporal, ms.float32)
        return ops.cast(mixed, dtype)
