"""Classifier-free guidance (sgm.modules.diffusionmodules.guiders).

A guider says how many copies of the batch the network sees (`num_copies`), how conditioning is
batched (`prepare_cond`, host side, once per video) and how the copies are combined
(`construct`, in float32, after the denoiser step: in graph mode a small graph of its own, so that
the UNet's compiled step serves every guider with the same number of copies). Per-frame guiders keep their
scales as float32 `frame_scales` (T,), computed as upstream's torch float32 code does so that the
scales agree bit for bit.
"""
from typing import Dict, List, Optional, Sequence, Union

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn, ops

from ...errors import ConfigError

GUIDED_KEYS = ("vector", "crossattn", "concat")
PERIOD_FUSINGS = ("mean", "multiply", "max")


def torch_linspace(start: float, end: float, steps: int) -> np.ndarray:
    """float32 linspace rounded like torch's CPU kernel for fewer than 16 values (the first half
    counted from `start`, the second from `end`, each value rounded once); longer ranges may
    differ from torch in the last bit."""
    f32 = np.float32
    if steps == 1:
        return np.array([start], f32)
    first, last = f32(start), f32(end)
    step = (last - first) / f32(steps - 1)
    index = np.arange(steps, dtype=np.float64)
    from_start = np.float64(first) + np.float64(step) * index
    from_end = np.float64(last) - np.float64(step) * (steps - 1 - index)
    return np.where(index < steps // 2, from_start, from_end).astype(f32)


class Guider(nn.Cell):
    num_copies = 2

    def __init__(self, additional_cond_keys: Optional[Union[List[str], str]] = None):
        super().__init__()
        if isinstance(additional_cond_keys, str):
            additional_cond_keys = [additional_cond_keys]
        self.guided_keys = tuple(GUIDED_KEYS) + tuple(additional_cond_keys or [])

    def prepare_cond(self, c: Dict, uc: Dict) -> Dict:
        """Uncond first, then cond, for the keys that differ between the two."""
        return {k: ops.cat((uc[k], c[k]), 0) if k in self.guided_keys else c[k] for k in c}

    # True when the combination returns the conditional copy: the unconditional half of the batch
    # would be computed for nothing. A plain attribute, not a method: MindSpore's graph parser has
    # been seen resolving `guider(...)` to another bound method of a guider created earlier.
    unguided = False


class IdentityGuider(Guider):
    num_copies = 1

    def prepare_cond(self, c: Dict, uc: Dict) -> Dict:
        return dict(c)

    unguided = True

    def construct(self, x, sigma):
        return x


class VanillaCFG(Guider):
    def __init__(self, scale: float):
        super().__init__()
        self.scale = scale
        self.unguided = float(scale) == 1.0

    def construct(self, x, sigma):
        x_u, x_c = ops.chunk(ops.cast(x, ms.float32), 2, axis=0)
        return x_u + self.scale * (x_c - x_u)


class LinearPredictionGuider(Guider):
    """Guidance scale rising linearly from min_scale on the first frame to max_scale on the last."""

    def __init__(self, max_scale: float, num_frames: int, min_scale: float = 1.0,
                 additional_cond_keys: Optional[Union[List[str], str]] = None):
        super().__init__(additional_cond_keys)
        self.min_scale = min_scale
        self.max_scale = max_scale
        self.num_frames = num_frames
        self.set_frame_scales(torch_linspace(min_scale, max_scale, num_frames))

    def set_frame_scales(self, scales: np.ndarray):
        self.frame_scales = np.asarray(scales, np.float32)
        self.scale = Tensor(self.frame_scales[None], ms.float32)
        self.unguided = bool(np.all(self.frame_scales == 1.0))

    def construct(self, x, sigma):
        x_u, x_c = ops.chunk(ops.cast(x, ms.float32), 2, axis=0)
        bt = x_u.shape[0]
        t = self.num_frames
        rest = x_u.shape[1:]
        x_u = x_u.reshape((bt // t, t) + rest)
        x_c = x_c.reshape((bt // t, t) + rest)
        scale = self.scale.reshape((1, t) + (1,) * len(rest))
        return (x_u + scale * (x_c - x_u)).reshape((bt,) + rest)


def triangle_wave(values: np.ndarray, period: float) -> np.ndarray:
    """0 at multiples of `period`, 1 half way between (float32, as upstream computes it)."""
    phase = values / np.float32(period)
    return (np.float32(2.0) * np.abs(phase - np.floor(phase + np.float32(0.5)))).astype(np.float32)


class TrianglePredictionGuider(LinearPredictionGuider):
    """Scale following a triangle wave over the frames (SV3D); several periods are fused by their
    mean, product or maximum."""

    def __init__(self, max_scale: float, num_frames: int, min_scale: float = 1.0,
                 period: Union[float, Sequence[float]] = 1.0, period_fusing: str = "max",
                 additional_cond_keys: Optional[Union[List[str], str]] = None):
        super().__init__(max_scale, num_frames, min_scale, additional_cond_keys)
        periods = [float(period)] if isinstance(period, (int, float)) else [float(p) for p in period]
        if not periods or any(p <= 0 for p in periods):
            raise ConfigError(f"period must be a positive number or a non-empty list of them, got {period}")
        if period_fusing not in PERIOD_FUSINGS:
            raise ConfigError(f"period_fusing must be one of {PERIOD_FUSINGS}, got '{period_fusing}'")
        values = torch_linspace(0.0, 1.0, num_frames)
        waves = [triangle_wave(values, p) for p in periods]
        if period_fusing == "mean":
            total = np.zeros_like(values)
            for wave in waves:
                total = (total + wave).astype(np.float32)
            fused = total / np.float32(len(waves))
        elif period_fusing == "multiply":
            fused = np.prod(np.stack(waves), axis=0, dtype=np.float32)
        else:
            fused = np.max(np.stack(waves), axis=0)
        self.period = periods
        self.period_fusing = period_fusing
        self.set_frame_scales(fused.astype(np.float32) * np.float32(max_scale - min_scale) + np.float32(min_scale))


class TrapezoidPredictionGuider(LinearPredictionGuider):
    """Scale rising from min_scale to max_scale over the first edge_perc of the frames and falling
    back over the last; the frames between keep upstream's plateau of 1.0 (not max_scale)."""

    def __init__(self, max_scale: float, num_frames: int, min_scale: float = 1.0, edge_perc: float = 0.1,
                 additional_cond_keys: Optional[Union[List[str], str]] = None):
        super().__init__(max_scale, num_frames, min_scale, additional_cond_keys)
        edge = int(num_frames * edge_perc)
        if edge < 0 or 2 * edge > num_frames:
            raise ConfigError(f"edge_perc must be between 0 and 0.5, got {edge_perc}")
        rise = torch_linspace(min_scale, max_scale, edge) if edge else np.zeros((0,), np.float32)
        self.edge_perc = edge_perc
        self.set_frame_scales(np.concatenate([rise, np.ones(num_frames - 2 * edge, np.float32), rise[::-1]]))


class SpatiotemporalPredictionGuider(LinearPredictionGuider):
    """SV4D 2.0's scale over the T*V images of a chunk (t-major): half a linear rise over the
    frames plus half a triangle wave over the views, mapped onto [min_scale, max_scale]."""

    def __init__(self, max_scale: float, num_frames: int, num_views: int = 1, min_scale: float = 1.0,
                 additional_cond_keys: Optional[Union[List[str], str]] = None):
        super().__init__(max_scale, num_frames, min_scale, additional_cond_keys)
        if num_views < 1 or num_frames % num_views:
            raise ConfigError(f"num_frames ({num_frames}) must be a multiple of num_views ({num_views})")
        frames = num_frames // num_views
        half = np.float32(0.5)
        over_frames = (torch_linspace(0.0, 1.0, frames)[:, None] * half).astype(np.float32)
        over_views = (triangle_wave(torch_linspace(0.0, 1.0, num_views), 1.0)[None, :] * half).astype(np.float32)
        scale = (np.zeros((frames, num_views), np.float32) + over_frames + over_views).astype(np.float32).ravel()
        self.num_views = num_views
        self.set_frame_scales(scale * np.float32(max_scale - min_scale) + np.float32(min_scale))


def skip_unused_copies(guider: Guider) -> Guider:
    """The guider a denoiser step should run: an IdentityGuider (one copy, conditional batch only)
    when `guider` would return the conditional prediction anyway, else `guider` itself."""
    if guider.num_copies > 1 and guider.unguided:
        return IdentityGuider()
    return guider
