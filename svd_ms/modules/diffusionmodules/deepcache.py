"""DeepCache for the video UNet (Ma et al., "DeepCache: Accelerating Diffusion Models for Free",
CVPR 2024; reference code: horseee/DeepCache, folder svd/).

Between two denoising steps the UNet's deep features change little. Every `interval`-th UNet
evaluation runs the whole UNet and keeps the feature that enters one output block; the evaluations
in between run only the shallow part: the input blocks down to the skip branch `branch`, then the
output blocks from the kept feature on, each still joined with its fresh skip connection.

Branches count the input blocks after the first convolution: branch b stops after input block
b + 1 and re-enters at the output block that takes that block's skip (output block N - 2 - b of N).
For the released SVD UNets (two resnets per level) this is DeepCache's own numbering: branch 0 is
the first resnet of the first level, branch 2 the first level's downsampler.
"""
from dataclasses import dataclass
from typing import Optional

import mindspore as ms
from mindspore import Tensor, nn, ops

from ...errors import ParamError


@dataclass(frozen=True)
class DeepCacheSchedule:
    """Which UNet evaluations run in full: 0, interval, 2 * interval, ... of one sampling run."""
    interval: int
    branch: int

    def check(self, num_input_blocks: int) -> None:
        if isinstance(self.interval, bool) or not isinstance(self.interval, int) or self.interval < 1:
            raise ParamError("cache_interval", f"cache_interval={self.interval!r} must be an integer >= 1")
        last = num_input_blocks - 2
        if isinstance(self.branch, bool) or not isinstance(self.branch, int) or not 0 <= self.branch <= last:
            raise ParamError("cache_branch", f"cache_branch={self.branch!r} must be an integer from 0 to {last} "
                             f"for this UNet ({num_input_blocks} input blocks)")

    def runs_full(self, evaluation: int) -> bool:
        return evaluation % self.interval == 0


def cache_points(num_input_blocks: int, branch: int):
    """(input blocks the shallow pass runs, first output block it runs) for `branch`."""
    stop = branch + 2
    return stop, num_input_blocks - stop


class _CachedUNetStep(nn.Cell):
    """The denoiser step (as models.diffusion.DenoiserStep) over a part of the UNet; the guider
    combines its copies afterwards (CachedDenoiserStep)."""

    def __init__(self, engine, num_copies: int, branch: int):
        super().__init__(auto_prefix=False)
        self.unet = engine.model.diffusion_model
        self.denoiser = engine.denoiser
        self.num_copies = num_copies
        self.down_stop, self.up_start = cache_points(len(self.unet.input_blocks), branch)

    def _inputs(self, x, sigma, concat):
        x_in = ops.cat([x] * self.num_copies, axis=0) if self.num_copies > 1 else x
        sigma_in = ops.broadcast_to(ops.cast(sigma, ms.float32).reshape(1), (x_in.shape[0],))
        x_in, scaled, c_skip, c_out, c_noise = self.denoiser.precondition(x_in, sigma_in)
        if concat is not None:
            scaled = ops.cat((scaled, ops.cast(concat, scaled.dtype)), axis=1)
        return x_in, scaled, c_skip, c_out, c_noise


class FullCachingStep(_CachedUNetStep):
    """The whole UNet; returns the denoised copies and the feature the shallow steps reuse."""

    def construct(self, x, sigma, concat, crossattn, vector, image_only_indicator, num_video_frames):
        x_in, h, c_skip, c_out, c_noise = self._inputs(x, sigma, concat)
        unet = self.unet
        emb = unet.embed(c_noise, vector)
        h, skips = unet.down(h, emb, crossattn, image_only_indicator, num_video_frames, len(unet.input_blocks))
        h = unet.middle_block(h, emb, crossattn, image_only_indicator, num_video_frames)
        feature = unet.up(h, skips, emb, crossattn, image_only_indicator, num_video_frames, 0, self.up_start)
        h = unet.up(feature, skips, emb, crossattn, image_only_indicator, num_video_frames, self.up_start,
                    len(unet.output_blocks))
        return self.denoiser.combine(unet.out(h), x_in, c_skip, c_out), feature


class ShallowCachedStep(_CachedUNetStep):
    """The shallow branch only, resumed from the kept feature."""

    def construct(self, x, sigma, concat, crossattn, vector, image_only_indicator, num_video_frames, feature):
        x_in, h, c_skip, c_out, c_noise = self._inputs(x, sigma, concat)
        unet = self.unet
        emb = unet.embed(c_noise, vector)
        _, skips = unet.down(h, emb, crossattn, image_only_indicator, num_video_frames, self.down_stop)
        h = unet.up(feature, skips, emb, crossattn, image_only_indicator, num_video_frames, self.up_start,
                    len(unet.output_blocks))
        return self.denoiser.combine(unet.out(h), x_in, c_skip, c_out)


class CachedDenoiserStep:
    """Stands in for the guided denoiser step during ONE sampling run (same call signature). The
    samplers stay stateless functions: the kept feature and the count of UNet evaluations live
    here, and a new run takes a new instance."""

    def __init__(self, schedule: DeepCacheSchedule, guider, full: FullCachingStep, shallow: ShallowCachedStep):
        self.schedule = schedule
        self.guider = guider
        self.full = full
        self.shallow = shallow
        self.evaluations = 0
        self.full_evaluations = 0
        self.feature: Optional[Tensor] = None

    def __call__(self, x, sigma, concat, crossattn, vector, image_only_indicator, num_video_frames):
        if self.feature is None or self.schedule.runs_full(self.evaluations):
            denoised, self.feature = self.full(x, sigma, concat, crossattn, vector, image_only_indicator,
                                               num_video_frames)
            self.full_evaluations += 1
        else:
            denoised = self.shallow(x, sigma, concat, crossattn, vector, image_only_indicator, num_video_frames,
                                    self.feature)
        self.evaluations += 1
        return self.guider(denoised, sigma)
