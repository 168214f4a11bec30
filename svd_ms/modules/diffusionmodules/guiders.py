"""Classifier-free guidance (sgm.modules.diffusionmodules.guiders).

A guider says how many copies of the batch the network sees (`num_copies`), how conditioning is
batched (`prepare_cond`, host side, once per video) and how the copies are combined
(`construct`, inside the compiled denoiser step, in float32).
"""
from typing import Dict, List, Optional, Union

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn, ops

GUIDED_KEYS = ("vector", "crossattn", "concat")


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


class IdentityGuider(Guider):
    num_copies = 1

    def prepare_cond(self, c: Dict, uc: Dict) -> Dict:
        return dict(c)

    def construct(self, x, sigma):
        return x


class VanillaCFG(Guider):
    def __init__(self, scale: float):
        super().__init__()
        self.scale = scale

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
        self.scale = Tensor(np.linspace(min_scale, max_scale, num_frames, dtype=np.float32)[None], ms.float32)

    def construct(self, x, sigma):
        x_u, x_c = ops.chunk(ops.cast(x, ms.float32), 2, axis=0)
        bt = x_u.shape[0]
        t = self.num_frames
        rest = x_u.shape[1:]
        x_u = x_u.reshape((bt // t, t) + rest)
        x_c = x_c.reshape((bt // t, t) + rest)
        scale = self.scale.reshape((1, t) + (1,) * len(rest))
        return (x_u + scale * (x_c - x_u)).reshape((bt,) + rest)


class TrianglePredictionGuider(LinearPredictionGuider):
    """Scale rising to max_scale at the middle frame and back to min_scale (SV3D)."""

    def __init__(self, max_scale: float, num_frames: int, min_scale: float = 1.0, period: float = 1.0,
                 period_fusing: str = "max", additional_cond_keys=None):
        super().__init__(max_scale, num_frames, min_scale, additional_cond_keys)
        values = np.linspace(0, 1, num_frames, dtype=np.float32)
        tri = np.float32(1.0) - np.abs(np.float32(2.0) * values - np.float32(1.0))
        self.scale = Tensor((min_scale + (max_scale - min_scale) * tri)[None].astype(np.float32), ms.float32)
