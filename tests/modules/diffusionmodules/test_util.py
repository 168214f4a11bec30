"""svd_ms.modules.diffusionmodules.util: the frames <-> video rearranges the temporal blocks share."""
import mindspore as ms
import numpy as np
import pytest

from svd_ms.modules.diffusionmodules.util import frames_to_video, video_to_frames


class _RoundTrip(ms.nn.Cell):
    def __init__(self, frames):
        super().__init__()
        self.frames = frames

    def construct(self, x):
        video = frames_to_video(x, self.frames)
        return video, video_to_frames(video * 2.0)


@pytest.mark.parametrize("mode", ["pynative", "graph"])
def test_frames_to_video_and_back(mode):
    """(b t) c h w -> b c t h w is the einops rearrange upstream uses, made contiguous; the way
    back restores the frame order."""
    b, t, c, h, w = 2, 3, 4, 5, 6
    x = np.random.default_rng(0).standard_normal((b * t, c, h, w)).astype(np.float32)
    ms.set_context(mode=ms.GRAPH_MODE if mode == "graph" else ms.PYNATIVE_MODE)
    try:
        video, frames = _RoundTrip(t)(ms.Tensor(x))
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE)
    expected = x.reshape(b, t, c, h, w).transpose(0, 2, 1, 3, 4)
    assert video.shape == (b, c, t, h, w)
    np.testing.assert_array_equal(video.asnumpy(), expected)
    np.testing.assert_array_equal(frames.asnumpy(), 2.0 * x)
    if mode == "pynative":
        assert video.is_contiguous()
