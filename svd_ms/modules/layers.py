"""Basic layers with the parameter names and shapes of their PyTorch counterparts.

Each layer computes in `self.compute_dtype` (float32 unless the precision policy lowers it);
normalisations always compute their statistics in float32. Convolutions pick their kernel
through `svd_ms.policy.conv_implementation()`.

Performance notes (MindSpore 2.10, CPU): composite elementwise chains are slow, in PyNative
especially, so the layers use the fused kernels MindSpore has on every backend: LayerNorm,
BiasAdd, SiLU, 2-D MatMul with a transposed operand, nearest interpolation; GroupNorm is the kernel
or, on CPU, a composition of vectorised operators (modules/composed_kernels.py).
"""
import functools
import math
from typing import Tuple

import numpy as np

import mindspore as ms
from mindspore import Parameter, Tensor, mint, nn, ops
from mindspore.common.initializer import initializer

from .. import policy
from ..errors import ConfigError
from .composed_kernels import group_norm_composed
from .cpu_kernels import conv2d_op, exact_gelu_op, group_norm_op, group_norm_settings, layer_norm_op, linear_op

# Largest im2col buffer (bytes) the matmul convolution builds at once; bigger inputs are
# processed in batch chunks, and single images in chunks of output rows.
MATMUL_CONV_CHUNK_BYTES = 256 * 1024 * 1024

_matmul_nt = ops.MatMul(transpose_b=True)


def _tuple(value, n) -> Tuple[int, ...]:
    if isinstance(value, (list, tuple)):
        assert len(value) == n, f"expected {n} values, got {value}"
        return tuple(int(v) for v in value)
    return (int(value),) * n


# Parameters start as zeros, which costs neither time nor memory until written: real weights
# come from a checkpoint, and random demo weights from `svd_ms.weights.randomize`. (A random
# initializer here would make building the full-size engine take ~90 s and ~10 GB.)
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
        return ops.silu(x)


def gelu(x):
    """Exact (erf) GELU, written out: MindSpore's fused GeLU kernel is the tanh approximation."""
    return 0.5 * x * (1.0 + ops.erf(x * 0.7071067811865476))


class GELU(nn.Cell):
    """Exact (erf) GELU, as torch.nn.GELU() and torch.nn.functional.gelu default to: float32 through
    the CPU kernel where `policy.cpu_gelu_kernel()` says so and it is built, else composed."""

    def __init__(self):
        super().__init__()
        self.kernel = exact_gelu_op() if policy.cpu_gelu_kernel() else None

    def construct(self, x):
        if self.kernel is not None and x.dtype == ms.float32:
            return self.kernel(x)
        return gelu(x)


def linear(x, weight, bias=None):
    """x @ weight.T + bias over the last axis, as one 2-D matmul (no broadcast batch matmul). A 2-D
    input gives the matmul's own output: in PyNative any reshaped view, even one of the same shape,
    is copied by the next element-wise or custom operator that reads it."""
    rows = x if x.ndim == 2 else x.reshape(-1, x.shape[-1])
    y = _matmul_nt(rows, weight)
    if bias is not None:
        y = ops.bias_add(y, bias)
    return y if x.ndim == 2 else y.reshape(x.shape[:-1] + (weight.shape[0],))


class Linear(nn.Cell):
    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.weight = _weight((out_features, in_features), in_features)
        self.bias = _bias(out_features, in_features) if bias else None
        self.compute_dtype = ms.float32
        # A LoRA adapter (svd_ms.lora) hangs here as a child cell rather than wrapping this
        # layer, so that the weight keeps its checkpoint name.
        self.lora = None
        self.kernel = linear_op() if policy.cpu_linear_kernel() else None
        if self.kernel is not None:
            from ..runtime.threads import kernel_threads
            self.kernel_settings = Tensor(np.array([kernel_threads()], np.float32))
            self.kernel_bias = Tensor(np.zeros(out_features, np.float32)) if self.bias is None else None

    def takes_kernel(self) -> bool:
        """Whether a call now runs the CPU kernel, which takes (..., C) tokens as they are and
        returns (..., O) without a reshaped view (inference, float32)."""
        return self.kernel is not None and not self.training and self.compute_dtype == ms.float32

    def construct(self, x):
        dtype = self.compute_dtype
        w = ops.cast(self.weight, dtype)
        b = ops.cast(self.bias, dtype) if self.bias is not None else None
        x = ops.cast(x, dtype)
        if self.takes_kernel():
            y = self.kernel(x, w, b if b is not None else self.kernel_bias, self.kernel_settings)
        else:
            y = linear(x, w, b)
        if self.lora is not None:
            y = y + self.lora(x, dtype)
        return y


@functools.lru_cache(maxsize=64)
def _tap_rows(spatial: Tuple[int, ...], kernel: Tuple[int, ...], stride: Tuple[int, ...],
              pads: Tuple[Tuple[int, int], ...]) -> Tuple[np.ndarray, Tuple[int, ...]]:
    """Row indices for im2col on a channels-last image of `spatial` positions.

    Returns (rows, out_spatial): rows has one entry per (output position, kernel tap), both in
    row-major order, holding the flat input position the tap reads, or prod(spatial) for taps
    that fall in the zero padding (the caller appends one zero row there).
    """
    out_spatial = tuple((size + lo + hi - k) // s + 1
                        for size, k, s, (lo, hi) in zip(spatial, kernel, stride, pads))
    ndim = len(spatial)
    flat = np.zeros(out_spatial + kernel, np.int64)
    inside = np.ones(out_spatial + kernel, bool)
    for d in range(ndim):
        shape = [1] * (2 * ndim)
        shape[d] = out_spatial[d]
        origin = (np.arange(out_spatial[d]) * stride[d] - pads[d][0]).reshape(shape)
        shape = [1] * (2 * ndim)
        shape[ndim + d] = kernel[d]
        pos = origin + np.arange(kernel[d]).reshape(shape)
        inside &= (pos >= 0) & (pos < spatial[d])
        flat = flat * spatial[d] + pos
    rows = np.where(inside, flat, int(np.prod(spatial))).astype(np.int32).reshape(-1)
    return rows, out_spatial


@functools.lru_cache(maxsize=256)
def _rows_tensor(spatial, kernel, stride, pads, start: int, stop: int) -> Tensor:
    rows, _ = _tap_rows(spatial, kernel, stride, pads)
    return Tensor(rows[start:stop])


@functools.lru_cache(maxsize=256)
def _conv_plan(n: int, c: int, spatial, kernel, stride, pads, itemsize: int):
    """Static geometry of one matmul convolution, as plain Python values:
    (out_spatial, taps, positions, out_positions, pointwise, batch_chunk, row_chunk)."""
    _, out_spatial = _tap_rows(spatial, kernel, stride, pads)
    taps = int(np.prod(kernel))
    positions = int(np.prod(spatial))
    out_positions = int(np.prod(out_spatial))
    pointwise = taps == 1 and tuple(out_spatial) == tuple(spatial) and all(p == (0, 0) for p in pads)
    per_image = out_positions * taps * c * itemsize
    batch_chunk = max(1, min(n, MATMUL_CONV_CHUNK_BYTES // max(per_image, 1)))
    if per_image <= MATMUL_CONV_CHUNK_BYTES:
        row_chunk = out_positions
    else:
        row_chunk = max(1, MATMUL_CONV_CHUNK_BYTES // (taps * c * itemsize))
    return out_spatial, taps, positions, out_positions, pointwise, batch_chunk, row_chunk


def _matmul_conv(x, w, stride, pads):
    """N-d convolution as gather (im2col on channels-last rows) + 2-D matmul, in chunks that
    bound the im2col buffer to MATMUL_CONV_CHUNK_BYTES.

    x: (n, c, *spatial); w: (o, c, *kernel); stride per spatial axis; pads: ((lo, hi), ...).
    """
    n, c = x.shape[0], x.shape[1]
    spatial = tuple(x.shape[2:])
    o = w.shape[0]
    kernel = tuple(w.shape[2:])
    itemsize = 2 if x.dtype == ms.float16 else 4
    out_spatial, taps, positions, out_positions, pointwise, batch_chunk, row_chunk = _conv_plan(
        n, c, spatial, kernel, stride, pads, itemsize)
    # (o, c, *kernel) -> (o, taps * c): taps outer, channels inner, matching the gathered rows.
    # The reordering waits for the input, so that graph mode does not run every layer's weight
    # reordering up front and keep all of them alive at once.
    w = ops.depend(w, x)
    if taps == 1:
        w2d = w.reshape(o, c)
    elif len(kernel) == 2:
        w2d = w.transpose(0, 2, 3, 1).reshape(o, taps * c)
    else:
        w2d = w.transpose(0, 2, 3, 4, 1).reshape(o, taps * c)
    tokens = x.reshape(n, c, positions).transpose(0, 2, 1)
    if pointwise:
        y = _matmul_nt(tokens.reshape(n * positions, c), w2d)
    else:
        # One zero row after each image: the target of every tap that lands in the padding.
        tokens = ops.cat([tokens, ops.zeros((n, 1, c), x.dtype)], axis=1)
        pieces = []
        for b0 in range(0, n, batch_chunk):
            b1 = min(n, b0 + batch_chunk)
            part = tokens if (b1 - b0) == n else tokens[b0:b1]
            row_pieces = []
            for r0 in range(0, out_positions, row_chunk):
                r1 = min(out_positions, r0 + row_chunk)
                index = _rows_tensor(spatial, kernel, stride, pads, r0 * taps, r1 * taps)
                cols = ops.gather(part, index, 1).reshape((b1 - b0) * (r1 - r0), taps * c)
                row_pieces.append(_matmul_nt(cols, w2d).reshape(b1 - b0, r1 - r0, o))
            pieces.append(row_pieces[0] if len(row_pieces) == 1 else ops.cat(row_pieces, axis=1))
        y = pieces[0] if len(pieces) == 1 else ops.cat(pieces, axis=0)
    y = y.reshape(n, out_positions, o).transpose(0, 2, 1)
    return y.reshape((n, o) + tuple(out_spatial))


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
        self.kernel = None

    def _use_kernel(self, pad_h: int, pad_w: int) -> None:
        """Take the project's stride-1 CPU convolution kernel where the policy says so."""
        if self.implementation == "matmul" or not policy.cpu_conv_kernel():
            return
        from ..runtime.threads import kernel_threads
        self.kernel = conv2d_op(pad_h, pad_w)
        self.kernel_settings = Tensor(np.array([pad_h, pad_w, kernel_threads()], np.float32))

    def _kernel_applies(self, dtype, shape) -> bool:
        return self.kernel is not None and dtype == ms.float32 and not self.training and self.kernel_fits(shape)

    def _run_kernel(self, x4, w4, dtype):
        bias = ops.zeros((self.out_channels,), dtype) if self.bias is None else ops.cast(self.bias, dtype)
        return self.kernel(x4, w4, bias, self.kernel_settings)

    def _add_bias(self, y, dtype):
        if self.bias is None:
            return y
        return ops.bias_add(y, ops.cast(self.bias, dtype))


class Conv2d(_ConvNd):
    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True):
        super().__init__(2, in_channels, out_channels, kernel_size, stride, padding, bias)
        if self.stride == (1, 1):
            self._use_kernel(*self.padding)

    def kernel_fits(self, shape) -> bool:
        """Whether an input of this shape has enough work for the CPU kernel to win (measured)."""
        return shape[0] * _count(shape[2:]) >= CONV_KERNEL_MIN_WORK

    def construct(self, x):
        return self.conv2d(x)

    def conv2d(self, x, extra_pad=None):
        """The convolution; `extra_pad` = (left, right, top, bottom) zero padding applied first
        (the VAE downsampler pads asymmetrically), folded into the im2col on the matmul path."""
        dtype = self.compute_dtype
        x = ops.cast(x, dtype)
        w = ops.cast(self.weight, dtype)
        ph, pw = self.padding
        if extra_pad is None and self._kernel_applies(dtype, x.shape):
            return self._run_kernel(x, w, dtype)
        if self.implementation == "matmul":
            left, right, top, bottom = extra_pad if extra_pad is not None else (0, 0, 0, 0)
            pads = ((ph + top, ph + bottom), (pw + left, pw + right))
            y = _matmul_conv(x, w, self.stride, pads)
        else:
            if extra_pad is not None:
                x = ops.pad(x, tuple(extra_pad))
            y = ops.conv2d(x, w, None, self.stride, "pad", self.padding)
        return self._add_bias(y, dtype)


# Where the CPU convolution kernel (cpu_kernels/conv2d.cc) is not slower than MindSpore's Conv2D: it
# reorders the weight into oneDNN's blocked layout on every call, which a few output positions do
# not pay for. Per call, kernel against Conv2D (PyNative, 2 cores, machine C; docs/performance.md):
# 3x3 convolutions 0.60-0.84x the time from 512 output positions over the batch (8x640x8x8:
# 0.84x; 8x320x16x16: 0.74x), 1.2-2.5x below (8x1280x4x4: 2.45x); (3, 1, 1) temporal ones
# 0.62-1.00x at every size measured (4 to 16 K positions per frame).
CONV_KERNEL_MIN_WORK = 512
TEMPORAL_KERNEL_MIN_POSITIONS = 1


class Conv3d(_ConvNd):
    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True):
        super().__init__(3, in_channels, out_channels, kernel_size, stride, padding, bias)
        # Ascend 910 has no fp32 Conv3D kernel; there the native op alone runs in fp16.
        self.native_kernel_dtype = ms.float16 if policy.conv3d_lacks_fp32() else None
        # A kernel that spans time only, (k, 1, 1) with stride 1, is a 2-D (k, 1) convolution over
        # (time, height * width): the video models' temporal mixing. MindSpore's CPU Conv2D ran it
        # 1.3-1.4x faster than its Conv3D, with the same result (benchmarks/cpu_isa.py).
        self.temporal_only = self.kernel_size[1:] == (1, 1) and self.stride == (1, 1, 1) and self.padding[1:] == (0, 0)
        if self.temporal_only:
            self._use_kernel(self.padding[0], 0)

    def kernel_fits(self, shape) -> bool:
        """Whether an input of this shape has enough work for the CPU kernel to win (measured)."""
        return self.temporal_only and _count(shape[3:]) >= TEMPORAL_KERNEL_MIN_POSITIONS

    def _temporal_as_2d(self, x, w, dtype):
        """The (k, 1, 1) convolution as a (k, 1) one over (time, height * width): through the CPU
        kernel where it applies, else MindSpore's Conv2D."""
        if self._kernel_applies(dtype, x.shape):
            return self._run_kernel(x, w, dtype)  # takes the 5-D tensors as they are: no reshaped copies
        n, c, t, h, wd = x.shape
        x2d, w2d = x.reshape(n, c, t, h * wd), w.reshape(w.shape[:3] + (1,))
        y = self._add_bias(ops.conv2d(x2d, w2d, None, 1, "pad", (self.padding[0], 0)), dtype)
        return y.reshape(n, y.shape[1], y.shape[2], h, wd)

    def construct(self, x):
        dtype = self.compute_dtype
        x = ops.cast(x, dtype)
        w = ops.cast(self.weight, dtype)
        if self.implementation == "matmul":
            y = _matmul_conv(x, w, self.stride, tuple((p, p) for p in self.padding))
        elif self.temporal_only:
            return self._temporal_as_2d(x, w, dtype)
        elif self.native_kernel_dtype is not None:
            y = ops.conv3d(ops.cast(x, self.native_kernel_dtype), ops.cast(w, self.native_kernel_dtype), None,
                           self.stride, "pad", self.padding)
            y = ops.cast(y, dtype)
        else:
            y = ops.conv3d(x, w, None, self.stride, "pad", self.padding)
        return self._add_bias(y, dtype)


# Below this many values the composition's dozen operator launches cost more than the kernel's
# scalar loop (PyNative, CPU: 0.70 against 1.66 ms at 65 K values, 5.3 against 3.8 ms at 524 K).
COMPOSED_GROUP_NORM_MIN_SIZE = 1 << 18


def _count(shape) -> int:
    """Values in a tensor of this shape, from the (compile-time) shape: in graph mode `Tensor.size`
    is an operator, and a branch on it becomes run-time control flow that fails to compile."""
    n = 1
    for d in shape:
        n *= d
    return n


class GroupNorm(nn.Cell):
    """GroupNorm over (N, C, *); statistics and affine in float32, output in the input dtype. Outside
    training, the project's CPU kernel where `policy.cpu_group_norm_kernel()` says so and it is
    built; otherwise the backend's kernel or the vectorised composition, as
    `policy.composed_group_norm()` says, the latter for inputs of COMPOSED_GROUP_NORM_MIN_SIZE
    values or more (all decided when the layer is built). `then_silu` is SiLU(GroupNorm(x)), the
    residual blocks' order, in one pass where the kernel runs on float32."""

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5, affine: bool = True):
        super().__init__()
        if num_groups < 1 or num_channels % num_groups:
            # Caught here: the kernels would fail at the first call with an error code instead.
            raise ConfigError(f"GroupNorm over {num_channels} channels in {num_groups} groups: the channels must be a "
                              f"multiple of the groups (check the model config's channel counts)")
        self.num_groups = num_groups
        self.num_channels = num_channels
        self.eps = eps
        self.weight = Parameter(initializer("ones", (num_channels,), ms.float32), name="weight")
        self.bias = Parameter(initializer("zeros", (num_channels,), ms.float32), name="bias")
        self.composed = policy.composed_group_norm()
        self.normalise = ops.BatchNorm(is_training=False, epsilon=eps)
        self.kernel = self.kernel_then_silu = None
        if policy.cpu_group_norm_kernel():
            from ..runtime.threads import kernel_threads
            self.kernel = group_norm_op(num_groups, eps)
            self.kernel_then_silu = group_norm_op(num_groups, eps, silu=True)
            self.kernel_settings = Tensor(group_norm_settings(num_groups, eps, False, kernel_threads()))
            self.kernel_then_silu_settings = Tensor(group_norm_settings(num_groups, eps, True, kernel_threads()))

    def construct(self, x):
        return self._normalised(x, False)

    def then_silu(self, x):
        return self._normalised(x, True)

    def _normalised(self, x, silu: bool):
        in_dtype = x.dtype
        x = ops.cast(x, ms.float32)
        if self.kernel is not None and not self.training:
            weight, bias = ops.cast(self.weight, ms.float32), ops.cast(self.bias, ms.float32)
            if silu and in_dtype == ms.float32:
                return self.kernel_then_silu(x, weight, bias, self.kernel_then_silu_settings)
            h = self.kernel(x, weight, bias, self.kernel_settings)
        elif self.composed and _count(x.shape) >= COMPOSED_GROUP_NORM_MIN_SIZE:
            h = group_norm_composed(x, self.num_groups, self.weight, self.bias, self.eps, self.normalise)
        else:
            h = mint.nn.functional.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)
        h = ops.cast(h, in_dtype)
        return ops.silu(h) if silu else h


class LayerNorm(nn.Cell):
    """LayerNorm over the last axis; computed in float32, output in the input dtype."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = Parameter(initializer("ones", (dim,), ms.float32), name="weight")
        self.bias = Parameter(initializer("zeros", (dim,), ms.float32), name="bias")
        self.norm = ops.LayerNorm(begin_norm_axis=-1, begin_params_axis=-1, epsilon=eps)
        self.kernel = layer_norm_op(eps) if policy.cpu_layer_norm_kernel() else None
        self.kernel_settings = Tensor(np.array([eps], np.float32))

    def construct(self, x):
        in_dtype = x.dtype
        x = ops.cast(x, ms.float32)
        if self.kernel is not None and not self.training:
            h = self.kernel(x, self.weight, self.bias, self.kernel_settings)
        else:
            h = self.norm(x, self.weight, self.bias)[0]
        return ops.cast(h, in_dtype)


def conv_nd(dims: int, *args, **kwargs):
    if dims == 2:
        return Conv2d(*args, **kwargs)
    if dims == 3:
        return Conv3d(*args, **kwargs)
    raise ValueError(f"unsupported convolution dims: {dims}")


def nearest_upsample(x, scale: int = 2):
    """Nearest-neighbour upsampling of the last two axes by an integer factor."""
    if x.ndim == 4:
        return mint.nn.functional.interpolate(x, scale_factor=(float(scale), float(scale)), mode="nearest")
    shape = x.shape
    lead = shape[:-2]
    h, w = shape[-2], shape[-1]
    x = x.reshape(lead + (h, 1, w, 1))
    x = ops.broadcast_to(x, lead + (h, scale, w, scale))
    return x.reshape(lead + (h * scale, w * scale))
