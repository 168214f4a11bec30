"""GroupNorm written as a chain of vectorised MindSpore operators, for backends whose own
GroupNorm kernel is slow (the device policy decides where: `policy.composed_group_norm`).

Why (MindSpore 2.10, CPU): the `GroupNorm` kernel took 0.16 s for 8x128x128x128 values, PyTorch
0.03-0.05 s (issue 22 reads MindSpore's source as a scalar double-precision Welford loop; not
re-read here).
`mint.mean` over the last axis of a 2-D tensor, `square`, the fused `BiasAdd` and `BatchNorm` (in
inference form) run at memory speed; operators that broadcast a (rows, 1) tensor over rows took
0.2 s for 16 M values, `mint.mean` over the last axis of a 3-D tensor 8x its 2-D time, so neither
is used. The composition took 0.086-0.097 s there (docs/performance.md, "GroupNorm, exact GELU
and kernel threads on CPU").

Two-pass statistics in float32 per (sample, group): the mean, then the mean of the squared
deviations (no E[x^2] - E[x]^2 cancellation), each summed in blocks; then one fused pass that
normalises and applies the affine per (sample, channel).
Gradients: tests/modules/diffusionmodules/test_loss.py compares the training step's with upstream.
"""
import mindspore as ms
from mindspore import mint, ops

# Rows longer than this are averaged in ROW_BLOCKS blocks, then the block means averaged: one
# running float32 mean over 65536 squares was off by ~1e-5 relative (PyTorch's own float32
# GroupNorm error, ~1e-6, comes from its cascade sums).
ROW_BLOCKS = 64
BLOCKED_MIN_LENGTH = 4096


def _row_means(rows_by_values):
    """Means of the rows of a 2-D float32 tensor."""
    rows, length = rows_by_values.shape
    if length >= BLOCKED_MIN_LENGTH and length % ROW_BLOCKS == 0:
        partial = mint.mean(rows_by_values.reshape(rows * ROW_BLOCKS, length // ROW_BLOCKS), -1)
        return mint.mean(partial.reshape(rows, ROW_BLOCKS), -1)
    return mint.mean(rows_by_values, -1)


def group_norm_composed(x, num_groups: int, weight, bias, eps: float, normalise):
    """GroupNorm over (N, C, *) of a float32 x with float32 (C,) weight and bias; `normalise` is
    an `ops.BatchNorm(is_training=False, epsilon=eps)` (made once by the caller's cell)."""
    n, c = x.shape[0], x.shape[1]
    rows = n * num_groups
    grouped = x.reshape(rows, -1)
    mean = _row_means(grouped)  # (rows,)
    centred = ops.bias_add(grouped.reshape(1, rows, -1), -mean)
    var = _row_means(ops.square(centred).reshape(rows, -1))
    per_channel = c // num_groups
    # 1 / std per row, repeated over the channels of its group, times the weight: (n * c,)
    rstd_c = ops.broadcast_to((1.0 / ops.sqrt(var + eps)).reshape(rows, 1), (rows, per_channel)).reshape(-1)
    scale = ops.tile(weight, (n,)) * rstd_c
    shift = ops.tile(bias, (n,))
    # The fused kernel computes (v - mean) / sqrt(variance + eps) * scale + shift. It gets the
    # centred values with mean 0 and variance 1 - eps (divisor 1): the statistics then reach the
    # result, and the gradient, only through `centred` and `scale`, both differentiable here (in
    # inference form the kernel treats its mean and variance inputs as constants).
    zero = ops.zeros((n * c,), ms.float32)
    unit = ops.fill(ms.float32, (n * c,), 1.0 - eps)
    y = normalise(centred.reshape(1, n * c, -1, 1), scale, shift, zero, unit)[0]
    return y.reshape(x.shape)
