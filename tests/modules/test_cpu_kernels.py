"""svd_ms.modules.cpu_kernels: the ahead-of-time CPU kernels (exact GELU, GEGLU's gated GELU)
against PyTorch (torch.nn.functional.gelu in float64 as the truth, float32 PyTorch's own error
printed beside ours), forward and gradient, PyNative and graph mode, through the layers that use
them; and that the install step built them for this host (a missing build fails here, it does
not fall back silently). Small shapes: a few seconds."""
import numpy as np
import pytest

import mindspore as ms

from svd_ms import policy
from svd_ms.modules import cpu_kernels, layers
from svd_ms.modules.attention import GEGLU

# max |ours - truth| <= bound x float32 eps x max(1, |truth|) per value ("units"): a few roundings
# for the kernels; the gradient (composed operators) rounds a few more times; the GEGLU layer adds
# its float32 projection over 24 inputs, which PyTorch float32 rounds as much (printed beside).
ULPS = 8
GRADIENT_ULPS = 16
PROJECTED_ULPS = 64


def _inputs(shape, seed=0):
    rng = np.random.default_rng(seed)
    x = (3.0 * rng.standard_normal(shape)).astype(np.float32)
    flat = x.reshape(-1)
    edge = np.array([0.0, -0.0, 1e-30, -1e-30, 5.0, -5.0, 9.5, -9.5, 40.0, -40.0], np.float32)
    flat[:edge.size] = edge  # zero, denormal-sized, the tails where erf saturates
    return x


def _within(name, ours, truth, torch_f32, bound=ULPS):
    ours, truth = np.asarray(ours, np.float64), np.asarray(truth, np.float64)
    unit = np.finfo(np.float32).eps * np.maximum(1.0, np.abs(truth))
    err = (np.abs(ours - truth) / unit).max()
    torch_err = (np.abs(np.asarray(torch_f32, np.float64) - truth) / unit).max()
    print(f"[parity] {name}: max error {err:.2f} units (unit = float32 eps x max(1,|truth|)), "
          f"torch float32 {torch_err:.2f} | bound <= {bound}")
    assert err <= bound


def _run(mode, fn, *args):
    ms.set_context(mode=ms.GRAPH_MODE if mode == "graph" else ms.PYNATIVE_MODE)
    try:
        return fn(*args)
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE)


def test_the_install_step_built_the_kernels_for_this_host():
    path = cpu_kernels.library_path()
    assert path.exists(), f"{path} missing: scripts/setup.sh builds it (python -m svd_ms.modules.cpu_kernels)"
    assert policy.cpu_gelu_kernel("CPU") and not policy.cpu_gelu_kernel("Ascend")
    assert cpu_kernels.exact_gelu_op() is not None and cpu_kernels.gated_gelu_op() is not None


def test_an_edited_source_is_not_served_by_an_older_build(tmp_path, monkeypatch):
    before = cpu_kernels.library_path()
    edited = tmp_path / "exact_gelu.cc"
    edited.write_text(cpu_kernels.SOURCE.read_text() + "\n// edited\n")
    monkeypatch.setattr(cpu_kernels, "SOURCE", edited)
    assert cpu_kernels.library_path() != before


@pytest.mark.parametrize("mode", ["pynative", "graph"])
def test_gelu_layer_matches_torch(mode):
    import torch
    x = _inputs((4, 33, 130))
    gelu = layers.GELU()
    assert gelu.kernel is not None
    ours = _run(mode, lambda t: gelu(t).asnumpy(), ms.Tensor(x))
    truth = torch.nn.functional.gelu(torch.from_numpy(x).double()).numpy()
    torch_f32 = torch.nn.functional.gelu(torch.from_numpy(x)).numpy()
    _within(f"gelu kernel [{mode}]", ours, truth, torch_f32)


@pytest.mark.parametrize("mode", ["pynative", "graph"])
def test_geglu_layer_matches_torch(mode):
    import torch
    rng = np.random.default_rng(1)
    geglu = GEGLU(24, 40)
    assert geglu.gated_kernel is not None
    weight = (0.3 * rng.standard_normal((80, 24))).astype(np.float32)
    bias = rng.standard_normal(80).astype(np.float32)
    geglu.proj.weight.set_data(ms.Tensor(weight))
    geglu.proj.bias.set_data(ms.Tensor(bias))
    x = _inputs((3, 17, 24), seed=2)
    ours = _run(mode, lambda t: geglu(t).asnumpy(), ms.Tensor(x))

    def torch_geglu(dtype):
        h = torch.nn.functional.linear(torch.from_numpy(x).to(dtype), torch.from_numpy(weight).to(dtype),
                                       torch.from_numpy(bias).to(dtype))
        value, gate = h.chunk(2, dim=-1)
        return (value * torch.nn.functional.gelu(gate)).numpy()
    _within(f"geglu layer [{mode}]", ours, torch_geglu(torch.float64), torch_geglu(torch.float32), PROJECTED_ULPS)


@pytest.mark.parametrize("mode", ["pynative", "graph"])
def test_gated_gelu_kernel_matches_torch(mode):
    import torch
    h = _inputs((2, 7, 2 * 45), seed=5)
    ours = _run(mode, lambda t: cpu_kernels.gated_gelu_op()(t).asnumpy(), ms.Tensor(h))

    def torch_gated(dtype):
        value, gate = torch.from_numpy(h).to(dtype).chunk(2, dim=-1)
        return (value * torch.nn.functional.gelu(gate)).numpy()
    _within(f"gated gelu kernel [{mode}]", ours, torch_gated(torch.float64), torch_gated(torch.float32))


@pytest.mark.parametrize("mode", ["pynative", "graph"])
def test_kernel_gradients_match_torch(mode):
    import torch
    h = _inputs((5, 2 * 36), seed=3)
    upstream = np.random.default_rng(4).standard_normal((5, 36)).astype(np.float32)
    gelu_op, gated_op = cpu_kernels.exact_gelu_op(), cpu_kernels.gated_gelu_op()

    def loss(t):
        return (gated_op(t) * ms.Tensor(upstream)).sum() + gelu_op(t).sum()
    ours = _run(mode, lambda t: ms.grad(loss)(t).asnumpy(), ms.Tensor(h))

    def torch_grad(dtype):
        t = torch.from_numpy(h).to(dtype).requires_grad_(True)
        value, gate = t.chunk(2, dim=-1)
        out = (value * torch.nn.functional.gelu(gate) * torch.from_numpy(upstream).to(dtype)).sum()
        (out + torch.nn.functional.gelu(t).sum()).backward()
        return t.grad.numpy()
    _within(f"gelu + gated gelu gradient [{mode}]", ours, torch_grad(torch.float64), torch_grad(torch.float32),
            GRADIENT_ULPS)


def test_float16_and_the_composed_policy_take_the_composition(monkeypatch):
    import torch
    x = _inputs((2, 50))
    gelu = layers.GELU()
    half = gelu(ms.Tensor(x.astype(np.float16)))
    assert half.dtype == ms.float16  # the kernel is float32-only: float16 runs composed
    truth = torch.nn.functional.gelu(torch.from_numpy(x.astype(np.float16)).double()).numpy()
    err = np.abs(half.asnumpy().astype(np.float64) - truth).max()
    print(f"[parity] gelu float16 (composed): max_abs={err:.3e} | bound <= {2e-3 * 40:.1e}")
    assert err <= 2e-3 * 40  # two float16 roundings at the largest value (40)
    monkeypatch.setenv("SVD_MS_GELU", "composed")
    assert layers.GELU().kernel is None and GEGLU(4, 4).gated_kernel is None
