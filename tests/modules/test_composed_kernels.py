"""svd_ms.modules.composed_kernels: the vectorised GroupNorm the CPU policy picks, against
torch.nn.functional.group_norm (float64 as the truth), in PyNative and graph mode, float32 and
float16 inputs, short rows and rows long enough for the blocked means. PyTorch's own float32 error
on the same input is printed beside ours. Small shapes: a few seconds."""
import numpy as np
import pytest

import mindspore as ms

from svd_ms import policy
from svd_ms.modules import composed_kernels, layers

# (input shape, groups, eps): a UNet-like 4-D map, a video (N, C, T, H, W) and one long enough
# (per group 4 x 64 x 64 = 16384 values) for the blocked means.
CASES = [((2, 64, 6, 5), 32, 1e-5), ((1, 32, 3, 4, 5), 8, 1e-6), ((2, 16, 64, 64), 4, 1e-6)]
# max |ours - truth| <= ULPS x float32 eps x max |truth|: a few roundings of the output's scale
ULPS = 4


def _layer(channels, groups, eps, rng, composed):
    norm = layers.GroupNorm(groups, channels, eps=eps)
    norm.composed = composed
    norm.kernel = None  # the CPU kernel (tests/modules/test_cpu_kernels.py) would run first
    norm.weight.set_data(ms.Tensor(rng.standard_normal(channels).astype(np.float32)))
    norm.bias.set_data(ms.Tensor(rng.standard_normal(channels).astype(np.float32)))
    return norm


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("mode", ["pynative", "graph"])
@pytest.mark.parametrize("case", CASES, ids=[str(c[0]) for c in CASES])
def test_composed_group_norm_matches_torch(case, mode, dtype, monkeypatch):
    import torch
    monkeypatch.setattr(layers, "COMPOSED_GROUP_NORM_MIN_SIZE", 0)  # these small inputs too
    shape, groups, eps = case
    rng = np.random.default_rng(3)
    norm = _layer(shape[1], groups, eps, rng, composed=True)
    # an offset mean (3) and spread (2) per sample, as activations have
    x = (3.0 + 2.0 * rng.standard_normal(shape)).astype(dtype)
    w, b = (torch.from_numpy(p.asnumpy()) for p in (norm.weight, norm.bias))
    truth = torch.nn.functional.group_norm(torch.from_numpy(x).double(), groups, w.double(), b.double(), eps)
    torch_f32 = torch.nn.functional.group_norm(torch.from_numpy(x).float(), groups, w, b, eps)
    ms.set_context(mode=ms.GRAPH_MODE if mode == "graph" else ms.PYNATIVE_MODE)
    try:
        ours = norm(ms.Tensor(x))
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE)
    assert ours.dtype == (ms.float16 if dtype == "float16" else ms.float32)
    truth = truth.numpy()
    if dtype == "float16":  # the output is rounded to float16: compare with the truth rounded so
        truth = truth.astype(np.float16).astype(np.float64)
    err = np.abs(ours.asnumpy().astype(np.float64) - truth).max()
    torch_err = np.abs(torch_f32.numpy().astype(dtype).astype(np.float64) - truth).max()
    unit = np.finfo(np.float32).eps * np.abs(truth).max()
    if dtype == "float16":  # one float16 rounding either way of the output
        unit = np.finfo(np.float16).eps * np.abs(truth).max()
    print(f"[parity] group_norm {shape} g={groups} [{mode}, {dtype}]: max_abs={err:.3e} "
          f"({err / unit:.2f} units), torch float32 {torch_err:.3e} ({torch_err / unit:.2f}) | bound <= {ULPS} units")
    assert err <= ULPS * unit


def test_policy_composes_on_cpu_only(monkeypatch):
    monkeypatch.delenv("SVD_MS_GROUP_NORM", raising=False)
    assert policy.composed_group_norm("CPU")
    assert not policy.composed_group_norm("Ascend") and not policy.composed_group_norm("GPU")
    monkeypatch.setenv("SVD_MS_GROUP_NORM", "native")
    assert not policy.composed_group_norm("CPU")
    assert not layers.GroupNorm(4, 8).composed, "the layer asks the policy when it is built"


def test_small_inputs_keep_the_kernel(monkeypatch):
    """Below COMPOSED_GROUP_NORM_MIN_SIZE values the kernel runs (the composition's launches cost
    more there): a composition that raised would show it."""
    def refuse(*args):
        raise AssertionError("composition used for a small input")
    monkeypatch.setattr(layers, "group_norm_composed", refuse)
    norm = layers.GroupNorm(4, 8)
    norm.composed, norm.kernel = True, None
    norm(ms.Tensor(np.ones((2, 8, 4, 4), np.float32)))
    monkeypatch.setattr(layers, "COMPOSED_GROUP_NORM_MIN_SIZE", 0)
    with pytest.raises(AssertionError, match="composition used"):
        norm(ms.Tensor(np.ones((2, 8, 4, 4), np.float32)))


def test_short_rows_skip_the_blocked_means():
    """Below BLOCKED_MIN_LENGTH the mean is one reduction; both paths give numpy's mean."""
    rng = np.random.default_rng(4)
    for length in (60, composed_kernels.BLOCKED_MIN_LENGTH * 2):
        rows = rng.standard_normal((3, length)).astype(np.float32) + 5.0
        got = composed_kernels._row_means(ms.Tensor(rows)).asnumpy()
        want = rows.astype(np.float64).mean(-1)
        assert np.abs(got - want).max() <= 4 * np.finfo(np.float32).eps * 5.0, (length, got, want)
