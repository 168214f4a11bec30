"""Basic layers with the parameter names and shapes of their PyTorch counterparts.

Each layer computes in `self.compute_dtype` (float32 unless the precision policy lowers it);
normalisations always compute their statistics in float32. Convolutions pick their kernel
through `svd_ms.policy.conv_implementation()`.
"""
import math
from typing import Sequence, Tuple, Union

import mindspore as ms
from mindspore import Parameter, nn, ops
from mindspore.common.initializer import initializer

from .. import policy


def _tuple(value, n) -> Tuple[int, ...]:
    if isinstance(value, (list, tuple)):
        assert len(value) == n, f"expected {n} values, got {value}"
        return tuple(int(v) for v in value)
    return (int(value),) * n


# Parameters start as zeros, which costs neither time nor memory until written: real weights
# come from a checkpoint, and random demo weights from `svd_ms.weights.randomize`.
def _weight(shape, fan_in):
    return Parameter(initializer("zeros", shape, ms.float32), name="weight")


def _bias(n, fan_in):
    return Parameter(initializer("zeros", (n,), ms.float32), name="bias")


class Identity(nn.Cell):
    def __init__(self, *args, **kwargs):
        super().__init__()

    def construct(self, x):
        return x


class SiLU(nn.Cell):
    def construct(self, x):
        return x * ops.sigmoid(x)


class GELU(nn.Cell):
    """Exact (erf) GELU, as torch.nn.GELU() and torch.nn.functional.gelu default to."""

    def construct(self, x):
        return ops.gelu(x, approximate="none")


class Linear(nn.Cell):
    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.weight = _weight((out_features, in_features), in_features)
        self.bias = _bias(out_features, in_features) if bias else None
        self.compute_dtype = ms.float32

    def construct(self, x):
        dtype = self.compute_dtype
        w = ops.cast(self.weight, dtype)
        b = ops.cast(self.bias, dtype) if self.bias is not None else None
        return ops.dense(ops.cast(x, dtype), w, b)


class _ConvNd(nn.Cell):
    def __init__(self, dims, in_channels, out_channels, kernel_size, stride, padding, bias):
        super().__init__()
        self.dims = dims
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = _tuple(kernel_size, dims)
        self.stride = _tuple(stride, dims)
        self.padding = _tuple(padding, dims)
        fan_in = in_channels * int(math.prod(self.kernel_size))
        self.weight = _weight((out_channels, in_channels) + self.kernel_size, fan_in)
        self.bias = _bias(out_channels, fan_in) if bias else None
        self.implementation = policy.conv_implementation()
        self.compute_dtype = ms.float32


class Conv2d(_ConvNd):
    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True):
        super().__init__(2, in_channels, out_channels, kernel_size, stride, padding, bias)
        self.is_pointwise = self.kernel_size == (1, 1) and self.stride == (1, 1) and self.padding == (0, 0)

    def construct(self, x):
        return self.conv2d(x)

    def conv2d(self, x):
        dtype = self.compute_dtype
        x = ops.cast(x, dtype)
        w = ops.cast(self.weight, dtype)
        if self.implementation == "matmul":
            y = self._matmul_conv(x, w)
        else:
            y = ops.conv2d(x, w, None, self.stride, "pad", self.padding)
        if self.bias is not None:
            y = y + ops.cast(self.bias, dtype).reshape(1, -1, 1, 1)
        return y

    def _matmul_conv(self, x, w):
        n, c, h, wd = x.shape
        kh, kw = self.kernel_size
        sh, sw = self.stride
        ph, pw = self.padding
        h_out = (h + 2 * ph - kh) // sh + 1
        w_out = (wd + 2 * pw - kw) // sw + 1
        w2d = w.reshape(self.out_channels, -1)
        if self.is_pointwise:
            cols = x.reshape(n, c, h * wd)
        else:
            cols = ops.unfold(x, self.kernel_size, 1, self.padding, self.stride)
        return ops.matmul(w2d, cols).reshape(n, self.out_channels, h_out, w_out)


class Conv3d(_ConvNd):
    """3-D convolution. SVD only uses temporal kernels (kt, 1, 1), which lower to matmuls over
    time-shifted copies of the input; any other kernel uses the backend's Conv3D."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True):
        super().__init__(3, in_channels, out_channels, kernel_size, stride, padding, bias)
        self.temporal_only = (
            self.kernel_size[1:] == (1, 1) and self.stride == (1, 1, 1) and self.padding[1:] == (0, 0)
        )
        # Ascend 910 has no fp32 Conv3D kernel; there the op alone runs in fp16.
        self.kernel_dtype = ms.float16 if (policy.conv3d_lacks_fp32() and self.implementation == "native") else None

    def construct(self, x):
        dtype = self.compute_dtype
        x = ops.cast(x, dtype)
        w = ops.cast(self.weight, dtype)
        if self.implementation == "matmul" and self.temporal_only:
            y = self._matmul_conv(x, w)
        elif self.kernel_dtype is not None:
            y = ops.conv3d(ops.cast(x, self.kernel_dtype), ops.cast(w, self.kernel_dtype), None,
                           self.stride, "pad", self.padding)
            y = ops.cast(y, dtype)
        else:
            y = ops.conv3d(x, w, None, self.stride, "pad", self.padding)
        if self.bias is not None:
            y = y + ops.cast(self.bias, dtype).reshape(1, -1, 1, 1, 1)
        return y

    def _matmul_conv(self, x, w):
        n, c, t, h, wd = x.shape
        kt = self.kernel_size[0]
        pt = self.padding[0]
        t_out = t + 2 * pt - kt + 1
        if pt > 0:
            x = ops.pad(x, (0, 0, 0, 0, pt, pt))
        # (n, c, kt, t_out, h*w): column k holds the input shifted by k frames.
        shifted = ops.stack([x[:, :, k:k + t_out] for k in range(kt)], axis=2)
        cols = shifted.reshape(n, c * kt, t_out * h * wd)
        y = ops.matmul(w.reshape(self.out_channels, c * kt), cols)
        return y.reshape(n, self.out_channels, t_out, h, wd)


class GroupNorm(nn.Cell):
    """GroupNorm over (N, C, *); statistics and affine in float32, output in the input dtype."""

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5, affine: bool = True):
        super().__init__()
        self.num_groups = num_groups
        self.num_channels = num_channels
        self.eps = eps
        self.weight = Parameter(initializer("ones", (num_channels,), ms.float32), name="weight")
        self.bias = Parameter(initializer("zeros", (num_channels,), ms.float32), name="bias")

    def construct(self, x):
        in_dtype = x.dtype
        shape = x.shape
        h = ops.cast(x, ms.float32).reshape(shape[0], self.num_groups, -1)
        mean = h.mean(axis=-1, keep_dims=True)
        var = ops.square(h - mean).mean(axis=-1, keep_dims=True)
        h = (h - mean) / ops.sqrt(var + self.eps)
        h = h.reshape(shape)
        affine_shape = (1, self.num_channels) + (1,) * (len(shape) - 2)
        h = h * self.weight.reshape(affine_shape) + self.bias.reshape(affine_shape)
        return ops.cast(h, in_dtype)


class LayerNorm(nn.Cell):
    """LayerNorm over the last axis; computed in float32, output in the input dtype."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = Parameter(initializer("ones", (dim,), ms.float32), name="weight")
        self.bias = Parameter(initializer("zeros", (dim,), ms.float32), name="bias")

    def construct(self, x):
        in_dtype = x.dtype
        h = ops.cast(x, ms.float32)
        mean = h.mean(axis=-1, keep_dims=True)
        var = ops.square(h - mean).mean(axis=-1, keep_dims=True)
        h = (h - mean) / ops.sqrt(var + self.eps) * self.weight + self.bias
        return ops.cast(h, in_dtype)


def conv_nd(dims: int, *args, **kwargs):
    if dims == 2:
        return Conv2d(*args, **kwargs)
    if dims == 3:
        return Conv3d(*args, **kwargs)
    raise ValueError(f"unsupported convolution dims: {dims}")


def nearest_upsample(x, scale: int = 2):
    """Nearest-neighbour upsampling of the last two axes by an integer factor."""
    shape = x.shape
    lead = shape[:-2]
    h, w = shape[-2], shape[-1]
    x = x.reshape(lead + (h, 1, w, 1))
    x = ops.broadcast_to(x, lead + (h, scale, w, scale))
    return x.reshape(lead + (h * scale, w * scale))
