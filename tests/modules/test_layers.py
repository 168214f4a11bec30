"""The matmul (gather + 2-D matmul) and native convolution paths agree on every kernel, stride
and padding shape the model uses, in PyNative and in graph mode. Small shapes: runs in seconds."""
import numpy as np
import pytest

import mindspore as ms
from mindspore import nn

from conftest import assert_close
from svd_ms.modules import layers

# (name, dims, in, out, kernel, stride, padding, extra_pad, input shape)
CASES = [
    ("3x3 pad 1 (UNet, VAE, 3-D ResBlock spatial)", 2, 6, 5, 3, 1, 1, None, (2, 6, 9, 7)),
    ("1x1 (skip connections, VAE attention q/k/v)", 2, 6, 5, 1, 1, 0, None, (2, 6, 9, 7)),
    ("3x3 stride 2 pad 0 after (0,1,0,1) (VAE Downsample)", 2, 4, 4, 3, 2, 0, (0, 1, 0, 1), (2, 4, 8, 10)),
    ("3x3 stride 2 pad 1 (UNet Downsample)", 2, 4, 6, 3, 2, 1, None, (2, 4, 8, 10)),
    ("14x14 stride 14 (CLIP patch embedding)", 2, 3, 8, 14, 14, 0, None, (1, 3, 28, 42)),
    ("Conv3d (3,1,1) pad (1,0,0) (temporal mixing)", 3, 5, 4, (3, 1, 1), 1, (1, 0, 0), None, (2, 5, 4, 3, 5)),
    ("Conv3d 3x3x3 pad 1 (general 3-D)", 3, 3, 4, 3, 1, 1, None, (1, 3, 4, 5, 6)),
]

BOUND = 1e-5  # max |matmul - native| / max |native|, float32


class _Run(nn.Cell):
    def __init__(self, conv, extra_pad):
        super().__init__()
        self.conv = conv
        self.extra_pad = extra_pad

    def construct(self, x):
        if self.extra_pad is None:
            return self.conv(x)
        return self.conv.conv2d(x, extra_pad=self.extra_pad)


def _build(dims, cin, cout, kernel, stride, padding, implementation):
    conv = layers.conv_nd(dims, cin, cout, kernel, stride=stride, padding=padding)
    conv.implementation = implementation
    return conv


@pytest.mark.parametrize("mode", ["pynative", "graph"])
@pytest.mark.parametrize("case", CASES, ids=[c[0].split(" (")[0] for c in CASES])
def test_matmul_conv_matches_native(case, mode):
    name, dims, cin, cout, kernel, stride, padding, extra_pad, shape = case
    rng = np.random.default_rng(0)
    native = _build(dims, cin, cout, kernel, stride, padding, "native")
    matmul = _build(dims, cin, cout, kernel, stride, padding, "matmul")
    matmul.weight.set_data(native.weight.data)
    matmul.bias.set_data(native.bias.data)
    x = ms.Tensor(rng.standard_normal(shape).astype(np.float32))
    ms.set_context(mode=ms.GRAPH_MODE if mode == "graph" else ms.PYNATIVE_MODE)
    try:
        expected = _Run(native, extra_pad)(x).asnumpy()
        actual = _Run(matmul, extra_pad)(x).asnumpy()
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE)
    assert_close(f"conv {name} [{mode}]", actual, expected, rel=BOUND)


def test_matmul_conv_chunks_match_unchunked(monkeypatch):
    """Inputs larger than the im2col budget are split by batch and by output rows."""
    rng = np.random.default_rng(1)
    conv = _build(2, 4, 3, 3, 1, 1, "matmul")
    x = ms.Tensor(rng.standard_normal((3, 4, 6, 5)).astype(np.float32))
    whole = conv(x).asnumpy()
    per_image = 6 * 5 * 9 * 4 * 4
    for budget in (per_image, per_image // 3):  # batch chunks of one image; then row chunks
        monkeypatch.setattr(layers, "MATMUL_CONV_CHUNK_BYTES", budget)
        layers._conv_plan.cache_clear()
        assert_close(f"chunked conv (budget {budget} B)", conv(x).asnumpy(), whole, rel=1e-6)
    layers._conv_plan.cache_clear()


@pytest.mark.parametrize("mode", ["pynative", "graph"])
@pytest.mark.parametrize("path", ["kernel", "native"])
def test_temporal_conv3d_matches_torch(mode, path, monkeypatch):
    """A (k, 1, 1) Conv3d runs through the project's CPU kernel (strided GEMMs) or as MindSpore's
    (k, 1) Conv2d over (time, height * width); PyTorch's conv3d is the reference."""
    import torch
    monkeypatch.setenv("SVD_MS_CONV_KERNEL", path)
    rng = np.random.default_rng(2)
    conv = layers.Conv3d(5, 4, (3, 1, 1), padding=(1, 0, 0))
    assert conv.temporal_only and conv.implementation == "native"
    assert (conv.kernel is not None) == (path == "kernel")
    w = rng.standard_normal((4, 5, 3, 1, 1)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    conv.weight.set_data(ms.Tensor(w))
    conv.bias.set_data(ms.Tensor(b))
    x = rng.standard_normal((2, 5, 6, 16, 16)).astype(np.float32)  # enough positions for the kernel
    expected = torch.nn.functional.conv3d(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b),
                                          padding=(1, 0, 0)).numpy()
    ms.set_context(mode=ms.GRAPH_MODE if mode == "graph" else ms.PYNATIVE_MODE)
    try:
        actual = conv(ms.Tensor(x)).asnumpy()
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE)
    assert_close(f"temporal Conv3d vs torch [{mode}]", actual, expected, rel=BOUND)


def test_group_norm_refuses_channels_that_do_not_split_into_its_groups():
    """torch.nn.GroupNorm refuses these when built; the CPU kernel would only fail at the first call
    with an error code."""
    from svd_ms.errors import ConfigError
    with pytest.raises(ConfigError, match="8 channels in 32 groups"):
        layers.GroupNorm(32, 8)
    assert layers.GroupNorm(8, 32).num_groups == 8
