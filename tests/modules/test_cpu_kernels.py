"""svd_ms.modules.cpu_kernels: the ahead-of-time CPU kernels (exact GELU, GEGLU's gated GELU,
GroupNorm's and LayerNorm's forward passes, the linear layer, the stride-1 convolution) against PyTorch (torch.nn.functional.gelu in float64 as the truth, float32 PyTorch's own error
printed beside ours), forward and gradient, PyNative and graph mode, through the layers that use
them; and that the install step built them for this host (a missing build fails here, it does
not fall back silently). Small shapes: a few seconds."""
import numpy as np
import pytest

import mindspore as ms

from conftest import assert_kernel_in_inference_only, assert_within_scale_units
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


def _gradients_within(label, grads, torch_grads):
    """Our gradients of (x, weight, bias) against torch_grads(float64), in units of float32 eps x
    each gradient's scale, PyTorch float32's own error printed beside."""
    import torch
    for name, ours, truth, torch_f32 in zip(("x", "weight", "bias"), grads, torch_grads(torch.float64),
                                            torch_grads(torch.float32)):
        assert_within_scale_units(f"{label} gradient of {name}", ours, truth, torch_f32, GRADIENT_ULPS)


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
    assert policy.cpu_group_norm_kernel("CPU") and not policy.cpu_group_norm_kernel("GPU")
    for op in (cpu_kernels.exact_gelu_op, cpu_kernels.gated_gelu_op):
        assert op() is not None, op.__name__
    assert cpu_kernels.group_norm_op(32, 1e-6) is not None


def test_an_edited_source_is_not_served_by_an_older_build(tmp_path, monkeypatch):
    before = cpu_kernels.library_path()
    for source in cpu_kernels.sources() + cpu_kernels.headers():
        (tmp_path / source.name).write_text(source.read_text())
    monkeypatch.setattr(cpu_kernels, "SOURCE_DIR", tmp_path)
    assert cpu_kernels.library_path() == before
    (tmp_path / "group_norm.cc").write_text((tmp_path / "group_norm.cc").read_text() + "\n// edited\n")
    edited_source = cpu_kernels.library_path()
    assert edited_source != before
    (tmp_path / "onednn.h").write_text((tmp_path / "onednn.h").read_text() + "\n// edited\n")
    assert cpu_kernels.library_path() not in (before, edited_source)


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


# (input shape, groups, eps): a UNet-like map, a video (N, C, T, H, W), a VAE-sized one
NORM_CASES = [((2, 64, 6, 5), 32, 1e-5), ((1, 32, 3, 4, 5), 8, 1e-6), ((2, 128, 48, 40), 32, 1e-6)]


def _group_norm(shape, groups, eps):
    rng = np.random.default_rng(6)
    norm = layers.GroupNorm(groups, shape[1], eps=eps)
    norm.set_train(False)
    norm.weight.set_data(ms.Tensor(rng.standard_normal(shape[1]).astype(np.float32)))
    norm.bias.set_data(ms.Tensor(rng.standard_normal(shape[1]).astype(np.float32)))
    x = (3.0 + 2.0 * rng.standard_normal(shape)).astype(np.float32)  # offset mean, as activations have
    return norm, x


@pytest.mark.parametrize("mode", ["pynative", "graph"])
@pytest.mark.parametrize("case", NORM_CASES, ids=[str(c[0]) for c in NORM_CASES])
def test_group_norm_kernel_matches_torch(case, mode):
    """Units of float32 eps x max |truth| (the output's scale), as tests/modules/test_composed_kernels.py."""
    import torch
    shape, groups, eps = case
    norm, x = _group_norm(shape, groups, eps)
    assert norm.kernel is not None
    ours = _run(mode, lambda t: norm(t).asnumpy(), ms.Tensor(x))
    w, b = (torch.from_numpy(p.asnumpy()) for p in (norm.weight, norm.bias))
    truth = torch.nn.functional.group_norm(torch.from_numpy(x).double(), groups, w.double(), b.double(), eps).numpy()
    torch_f32 = torch.nn.functional.group_norm(torch.from_numpy(x), groups, w, b, eps).numpy()
    assert_within_scale_units(f"group_norm kernel {shape} g={groups} [{mode}]", ours, truth, torch_f32, 4)


def _torch_group_norm_silu(x, groups, norm, eps, dtype):
    import torch
    w, b = (torch.from_numpy(p.asnumpy()).to(dtype) for p in (norm.weight, norm.bias))
    return torch.nn.functional.silu(torch.nn.functional.group_norm(torch.from_numpy(x).to(dtype), groups, w, b, eps))


@pytest.mark.parametrize("mode", ["pynative", "graph"])
@pytest.mark.parametrize("case", NORM_CASES, ids=[str(c[0]) for c in NORM_CASES])
def test_group_norm_then_silu_kernel_matches_torch(case, mode):
    """SiLU(GroupNorm(x)) in the kernel's one pass (the last case is large enough to be split over
    threads), against PyTorch's two operators in float64."""
    import torch
    shape, groups, eps = case
    norm, x = _group_norm(shape, groups, eps)
    assert norm.kernel_then_silu is not None
    ours = _run(mode, lambda t: norm.then_silu(t).asnumpy(), ms.Tensor(x))
    truth = _torch_group_norm_silu(x, groups, norm, eps, torch.float64).numpy()
    torch_f32 = _torch_group_norm_silu(x, groups, norm, eps, torch.float32).numpy()
    assert_within_scale_units(f"group_norm then silu kernel {shape} g={groups} [{mode}]", ours, truth, torch_f32, 8)


@pytest.mark.parametrize("mode", ["pynative", "graph"])
@pytest.mark.parametrize("then_silu", [False, True], ids=["group_norm", "group_norm then silu"])
def test_group_norm_kernel_gradients_match_torch(then_silu, mode):
    """Gradients through the kernel (a model in inference mode differentiated, as the LoRA and
    loss tests do) for x, weight and bias, against PyTorch in float64."""
    import torch
    shape, groups, eps = (2, 64, 6, 5), 32, 1e-5
    norm, x = _group_norm(shape, groups, eps)
    upstream = np.random.default_rng(7).standard_normal(shape).astype(np.float32)
    op = cpu_kernels.group_norm_op(groups, eps, silu=then_silu)
    settings = norm.kernel_then_silu_settings if then_silu else norm.kernel_settings

    def loss(t, w, b):
        return (op(t, w, b, settings) * ms.Tensor(upstream)).sum()
    grads = _run(mode, lambda *a: [g.asnumpy() for g in ms.grad(loss, grad_position=(0, 1, 2))(*a)],
                 ms.Tensor(x), norm.weight.value(), norm.bias.value())

    def torch_grads(dtype):
        t, w, b = (torch.from_numpy(a).to(dtype).requires_grad_(True)
                   for a in (x, norm.weight.asnumpy(), norm.bias.asnumpy()))
        y = torch.nn.functional.group_norm(t, groups, w, b, eps)
        y = torch.nn.functional.silu(y) if then_silu else y
        (y * torch.from_numpy(upstream).to(dtype)).sum().backward()
        return [a.grad.numpy() for a in (t, w, b)]
    what = "group_norm then silu" if then_silu else "group_norm"
    _gradients_within(f"{what} kernel [{mode}]", grads, torch_grads)


def test_group_norm_then_silu_outside_the_kernel():
    """Training, and float16 inputs, apply SiLU after the norm as separate operators."""
    import torch
    norm, x = _group_norm((2, 64, 6, 5), 32, 1e-5)

    def refuse(*args):
        raise AssertionError("kernel used")
    norm.kernel = norm.kernel_then_silu = refuse
    norm.set_train(True)
    trained = norm.then_silu(ms.Tensor(x)).asnumpy()
    truth = _torch_group_norm_silu(x, 32, norm, 1e-5, torch.float64).numpy()
    assert_within_scale_units("group_norm then silu, training (composed)", trained, truth,
                              _torch_group_norm_silu(x, 32, norm, 1e-5, torch.float32).numpy(), 8)
    norm, x = _group_norm((2, 64, 6, 5), 32, 1e-5)
    half = norm.then_silu(ms.Tensor(x.astype(np.float16)))
    assert half.dtype == ms.float16


def test_group_norm_kernel_is_inference_only(monkeypatch):
    """Training takes the composition (its gradients are the ones checked against upstream in
    tests/modules/diffusionmodules/test_loss.py), and float16 inputs go through it in float32 and come back float16."""
    import torch
    norm, x = _group_norm((2, 64, 6, 5), 32, 1e-5)
    half = norm(ms.Tensor(x.astype(np.float16)))
    assert half.dtype == ms.float16
    w, b = (torch.from_numpy(p.asnumpy()).double() for p in (norm.weight, norm.bias))
    truth = torch.nn.functional.group_norm(torch.from_numpy(x.astype(np.float16)).double(), 32, w, b, 1e-5).numpy()
    err = np.abs(half.asnumpy().astype(np.float64) - truth).max()
    bound = np.finfo(np.float16).eps * np.abs(truth).max()
    print(f"[parity] group_norm kernel float16 in/out: max_abs={err:.3e} | bound <= {bound:.3e}")
    assert err <= bound

    def refuse(*args):
        raise AssertionError("kernel used while training")
    norm.kernel = refuse
    norm.set_train(True)
    trained = norm(ms.Tensor(x)).asnumpy()
    norm.set_train(False)
    with pytest.raises(AssertionError, match="kernel used"):
        norm(ms.Tensor(x))
    monkeypatch.setenv("SVD_MS_GROUP_NORM", "composed")
    assert layers.GroupNorm(4, 8).kernel is None
    assert np.isfinite(trained).all()


LAYER_NORM_CASES = [((2, 9, 32), 1e-5), ((3, 320), 1e-6), ((1, 5, 7, 1280), 1e-5)]


def _layer_norm(shape, eps):
    rng = np.random.default_rng(8)
    norm = layers.LayerNorm(shape[-1], eps=eps)
    norm.set_train(False)
    norm.weight.set_data(ms.Tensor(rng.standard_normal(shape[-1]).astype(np.float32)))
    norm.bias.set_data(ms.Tensor(rng.standard_normal(shape[-1]).astype(np.float32)))
    x = (3.0 + 2.0 * rng.standard_normal(shape)).astype(np.float32)
    return norm, x


def _torch_layer_norm(norm, x, dtype, upstream=None):
    """PyTorch's layer_norm of x with the layer's affine; with `upstream`, the gradients of x,
    weight and bias instead."""
    import torch
    t, w, b = (torch.from_numpy(a).to(dtype).requires_grad_(upstream is not None)
               for a in (x, norm.weight.asnumpy(), norm.bias.asnumpy()))
    y = torch.nn.functional.layer_norm(t, (x.shape[-1],), w, b, norm.eps)
    if upstream is None:
        return y.detach().numpy()
    (y * torch.from_numpy(upstream).to(dtype)).sum().backward()
    return [a.grad.numpy() for a in (t, w, b)]


@pytest.mark.parametrize("mode", ["pynative", "graph"])
@pytest.mark.parametrize("case", LAYER_NORM_CASES, ids=[str(c[0]) for c in LAYER_NORM_CASES])
def test_layer_norm_kernel_matches_torch(case, mode):
    """Units of float32 eps x max |truth|, as GroupNorm's kernel above."""
    import torch
    shape, eps = case
    norm, x = _layer_norm(shape, eps)
    assert norm.kernel is not None
    ours = _run(mode, lambda t: norm(t).asnumpy(), ms.Tensor(x))
    truth, torch_f32 = _torch_layer_norm(norm, x, torch.float64), _torch_layer_norm(norm, x, torch.float32)
    assert_within_scale_units(f"layer_norm kernel {shape} [{mode}]", ours, truth, torch_f32, 4)


@pytest.mark.parametrize("mode", ["pynative", "graph"])
def test_layer_norm_kernel_gradients_match_torch(mode):
    import torch
    norm, x = _layer_norm((2, 9, 32), 1e-5)
    upstream = np.random.default_rng(9).standard_normal(x.shape).astype(np.float32)
    op = cpu_kernels.layer_norm_op(1e-5)

    def loss(t, w, b):
        return (op(t, w, b, norm.kernel_settings) * ms.Tensor(upstream)).sum()
    grads = _run(mode, lambda *a: [g.asnumpy() for g in ms.grad(loss, grad_position=(0, 1, 2))(*a)],
                 ms.Tensor(x), norm.weight.value(), norm.bias.value())
    _gradients_within(f"layer_norm kernel [{mode}]", grads,
                      lambda dtype: _torch_layer_norm(norm, x, dtype, upstream=upstream))


def test_layer_norm_kernel_is_inference_only(monkeypatch):
    """Training runs MindSpore's LayerNorm (the gradients checked against upstream elsewhere);
    SVD_MS_LAYER_NORM=native turns the kernel off."""
    norm, x = _layer_norm((2, 9, 32), 1e-5)
    assert_kernel_in_inference_only("layer_norm", norm, [x])
    monkeypatch.setenv("SVD_MS_LAYER_NORM", "native")
    assert layers.LayerNorm(8).kernel is None


# Linear layers through linear.cc: (input shape, out features, bias): tokens of a video block
# (rows split over threads), a conditioning vector (output columns split), a plain 2-D input.
LINEAR_CASES = [((2, 30, 48), 24, True), ((3, 64), 200, False), ((1, 2, 3, 40), 7, True)]


def _linear(shape, out_features, bias):
    rng = np.random.default_rng(10)
    layer = layers.Linear(shape[-1], out_features, bias=bias)
    layer.set_train(False)
    layer.weight.set_data(ms.Tensor((rng.standard_normal(layer.weight.shape) * 0.2).astype(np.float32)))
    if bias:
        layer.bias.set_data(ms.Tensor(rng.standard_normal(out_features).astype(np.float32)))
    return layer, rng.standard_normal(shape).astype(np.float32)


def _torch_linear(layer, x, dtype, upstream=None):
    import torch
    ts = [torch.from_numpy(a).to(dtype).requires_grad_(upstream is not None)
          for a in (x, layer.weight.asnumpy()) + ((layer.bias.asnumpy(),) if layer.bias is not None else ())]
    y = torch.nn.functional.linear(*ts)
    if upstream is None:
        return y.detach().numpy()
    (y * torch.from_numpy(upstream).to(dtype)).sum().backward()
    return [t.grad.numpy() for t in ts]


@pytest.mark.parametrize("mode", ["pynative", "graph"])
@pytest.mark.parametrize("case", LINEAR_CASES, ids=[str(c[:2]) for c in LINEAR_CASES])
def test_linear_kernel_matches_torch(case, mode):
    """Units of float32 eps x max |truth|; the sums run over up to 48 inputs, as PyTorch's do."""
    import torch
    layer, x = _linear(*case)
    assert layer.takes_kernel()
    ours = _run(mode, lambda t: layer(t).asnumpy(), ms.Tensor(x))
    assert ours.shape == x.shape[:-1] + (case[1],)
    truth, torch_f32 = _torch_linear(layer, x, torch.float64), _torch_linear(layer, x, torch.float32)
    assert_within_scale_units(f"linear kernel {case} [{mode}]", ours, truth, torch_f32, ULPS)


@pytest.mark.parametrize("mode", ["pynative", "graph"])
def test_linear_kernel_gradients_match_torch(mode):
    import torch
    layer, x = _linear((2, 9, 48), 24, True)
    upstream = np.random.default_rng(11).standard_normal((2, 9, 24)).astype(np.float32)
    op = cpu_kernels.linear_op()

    def loss(t, w, b):
        return (op(t, w, b, layer.kernel_settings) * ms.Tensor(upstream)).sum()
    grads = _run(mode, lambda *a: [g.asnumpy() for g in ms.grad(loss, grad_position=(0, 1, 2))(*a)],
                 ms.Tensor(x), layer.weight.value(), layer.bias.value())
    _gradients_within(f"linear kernel [{mode}]", grads, lambda dtype: _torch_linear(layer, x, dtype, upstream=upstream))


def test_linear_kernel_is_inference_only(monkeypatch):
    """Training runs MatMul and BiasAdd (the gradients checked against upstream elsewhere);
    SVD_MS_LINEAR=native turns the kernel off."""
    layer, x = _linear((2, 9, 48), 24, True)
    assert_kernel_in_inference_only("linear", layer, [x])
    monkeypatch.setenv("SVD_MS_LINEAR", "native")
    assert layers.Linear(4, 4).kernel is None


# Convolutions through the stride-1 kernel (conv2d.cc), via the layers, with enough work that the
# layers take it (layers.CONV_KERNEL_MIN_WORK, TEMPORAL_KERNEL_MIN_POSITIONS).
# (dims, x shape, out channels, kernel, padding, bias): 3x3 same-size; 3x3 shrinking (padding 0)
# with no bias; 1x1; several row and column blocks over one image, output channels fewer than
# the GEMM's usual tile; temporal (3, 1, 1) over a video block, one frame, padding 0 without bias,
# and wide frames (several blocks over threads).
CONV_CASES = [
    (2, (1, 6, 128, 130), 5, 3, 1, True), (2, (4, 5, 64, 66), 3, 3, 0, False), (2, (2, 16, 96, 90), 8, 1, 0, True),
    (2, (1, 40, 150, 120), 3, 3, 1, True),
    (3, (2, 6, 5, 16, 16), 7, (3, 1, 1), (1, 0, 0), True), (3, (1, 8, 1, 16, 20), 4, (3, 1, 1), (1, 0, 0), True),
    (3, (1, 5, 6, 16, 17), 3, (3, 1, 1), (0, 0, 0), False), (3, (1, 12, 3, 20, 660), 10, (3, 1, 1), (1, 0, 0), True)]


def _conv_layer(dims, shape, out_channels, kernel, padding, bias):
    rng = np.random.default_rng(8)
    conv = layers.conv_nd(dims, shape[1], out_channels, kernel, padding=padding, bias=bias)
    conv.set_train(False)
    conv.weight.set_data(ms.Tensor(rng.standard_normal(conv.weight.shape).astype(np.float32)))
    if bias:
        conv.bias.set_data(ms.Tensor(rng.standard_normal(out_channels).astype(np.float32)))
    return conv, rng.standard_normal(shape).astype(np.float32)


def _without_native_conv(call):
    """call() with ops.conv2d refusing: the project's kernel, not MindSpore's Conv2D, must run."""
    original = layers.ops.conv2d

    def refuse(*args, **kwargs):
        raise AssertionError("MindSpore's Conv2D used")
    layers.ops.conv2d = refuse
    try:
        return call()
    finally:
        layers.ops.conv2d = original


def _torch_conv(conv, x, dtype):
    import torch
    w = torch.from_numpy(conv.weight.asnumpy()).to(dtype)
    b = None if conv.bias is None else torch.from_numpy(conv.bias.asnumpy()).to(dtype)
    run = torch.nn.functional.conv2d if x.ndim == 4 else torch.nn.functional.conv3d
    return run(torch.from_numpy(x).to(dtype), w, b, padding=conv.padding).numpy()


@pytest.mark.parametrize("mode", ["pynative", "graph"])
@pytest.mark.parametrize("case", CONV_CASES, ids=[f"{c[1]}-k{c[3]}" for c in CONV_CASES])
def test_conv_kernel_matches_torch(case, mode):
    """Units of float32 eps x max |truth| (the output's scale): a sum of taps x C_in products."""
    import torch
    conv, x = _conv_layer(*case)
    assert conv.kernel is not None
    ours = _run(mode, lambda t: _without_native_conv(lambda: conv(t).asnumpy()), ms.Tensor(x))
    truth = _torch_conv(conv, x, torch.float64)
    torch_f32 = _torch_conv(conv, x, torch.float32)
    assert ours.shape == truth.shape
    assert_within_scale_units(f"conv kernel {case[1]} -> {case[2]}, kernel {case[3]}, padding {case[4]} [{mode}]",
                              ours, truth, torch_f32, ULPS)


@pytest.mark.parametrize("mode", ["pynative", "graph"])
@pytest.mark.parametrize("case", [((2, 6, 5, 7), (7, 6, 3, 3), (1, 1)), ((2, 6, 5, 12), (7, 6, 3, 1), (1, 0)),
                                  ((1, 4, 6, 6), (3, 4, 3, 3), (0, 0)), ((2, 6, 5, 3, 4), (7, 6, 3, 1, 1), (1, 0))],
                         ids=["3x3", "temporal", "3x3 pad 0", "temporal 5-D"])
def test_conv_kernel_gradients_match_torch(case, mode):
    """Gradients through the kernel (a model in inference mode differentiated, as the LoRA and
    loss tests do) for x, weight and bias, against PyTorch in float64; a temporal convolution's
    5-D tensors go to the kernel as they are."""
    import torch
    x_shape, w_shape, (pad_h, pad_w) = case
    rng = np.random.default_rng(9)
    x, weight, bias = (rng.standard_normal(s).astype(np.float32) for s in (x_shape, w_shape, w_shape[:1]))
    out_shape = (x_shape[0], w_shape[0], x_shape[2] + 2 * pad_h - w_shape[2] + 1, x_shape[3] + 2 * pad_w - w_shape[3] + 1)
    out_shape += tuple(x_shape[4:])
    torch_conv = "conv3d" if len(x_shape) == 5 else "conv2d"
    padding = (pad_h, pad_w, 0) if len(x_shape) == 5 else (pad_h, pad_w)
    upstream = rng.standard_normal(out_shape).astype(np.float32)
    op = cpu_kernels.conv2d_op(pad_h, pad_w)
    settings = ms.Tensor(np.array([pad_h, pad_w, 2], np.float32))

    def loss(t, w, b):
        return (op(t, w, b, settings) * ms.Tensor(upstream)).sum()
    grads = _run(mode, lambda *a: [g.asnumpy() for g in ms.grad(loss, grad_position=(0, 1, 2))(*a)],
                 ms.Tensor(x), ms.Tensor(weight), ms.Tensor(bias))

    def torch_grads(dtype):
        t, w, b = (torch.from_numpy(a).to(dtype).requires_grad_(True) for a in (x, weight, bias))
        y = getattr(torch.nn.functional, torch_conv)(t, w, b, padding=padding)
        (y * torch.from_numpy(upstream).to(dtype)).sum().backward()
        return [a.grad.numpy() for a in (t, w, b)]
    _gradients_within(f"conv kernel ({case[1]}, padding {case[2]}) [{mode}]", grads, torch_grads)


def test_conv_kernel_is_inference_only_and_sized(monkeypatch):
    """Training, float16, too little work, stride 2 and the VAE's asymmetric padding take
    MindSpore's Conv2D; SVD_MS_CONV_KERNEL=native turns the kernel off."""
    conv, x = _conv_layer(2, (1, 4, 128, 128), 4, 3, 1, True)
    temporal, video = _conv_layer(3, (1, 4, 3, 16, 16), 4, (3, 1, 1), (1, 0, 0), True)

    def refuse(*args):
        raise AssertionError("kernel used")
    for layer, data in ((conv, x), (temporal, video)):
        layer.kernel = refuse
        layer.set_train(True)
        assert np.isfinite(layer(ms.Tensor(data)).asnumpy()).all()
        layer.set_train(False)
        layer.compute_dtype = ms.float16
        assert layer(ms.Tensor(data)).dtype == ms.float16
        layer.compute_dtype = ms.float32
        with pytest.raises(AssertionError, match="kernel used"):
            layer(ms.Tensor(data))
    assert np.isfinite(conv(ms.Tensor(x[:, :, :16, :16])).asnumpy()).all()  # 256 positions: Conv2D
    with pytest.raises(AssertionError, match="kernel used"):
        conv(ms.Tensor(x[:, :, :32, :32]))  # 1 K positions: the kernel
    assert np.isfinite(conv.conv2d(ms.Tensor(x), extra_pad=(0, 1, 0, 1)).asnumpy()).all()
    with pytest.raises(AssertionError, match="kernel used"):
        temporal(ms.Tensor(video[:, :, :, :2, :2]))  # temporal ones take the kernel at any size
    assert layers.Conv2d(4, 4, 3, stride=2, padding=1).kernel is None
    assert layers.Conv3d(4, 4, (3, 3, 3), padding=1).kernel is None
    monkeypatch.setenv("SVD_MS_CONV_KERNEL", "native")
    assert layers.Conv3d(4, 4, (3, 1, 1), padding=(1, 0, 0)).kernel is None
    assert layers.Conv2d(4, 4, 3, padding=1).kernel is None


@pytest.mark.parametrize("dims", [2, 3])
def test_conv_kernel_keeps_a_small_signal_on_a_large_bias(dims):
    """A near-constant input (SV4D 2.0 encodes all-zero views plus 1e-5 noise, and the GroupNorm
    after the convolution divides by that tiny spread): the bias is added once after the taps'
    sum, so the signal keeps float32 precision of its own scale, not of the bias's."""
    import torch
    shape = (1, 16, 128, 130) if dims == 2 else (1, 16, 4, 16, 32)
    kernel, padding = (3, 1) if dims == 2 else ((3, 1, 1), (1, 0, 0))
    conv, _ = _conv_layer(dims, shape, 8, kernel, padding, True)
    conv.bias.set_data(ms.Tensor(np.full(8, 0.5, np.float32)))
    x = (1e-5 * np.random.default_rng(10).standard_normal(shape)).astype(np.float32)
    ours = _without_native_conv(lambda: conv(ms.Tensor(x)).asnumpy()) - 0.5
    truth = _torch_conv(conv, x, torch.float64) - 0.5
    torch_f32 = _torch_conv(conv, x, torch.float32) - 0.5
    unit = np.finfo(np.float32).eps * np.abs(truth).max()
    err, torch_err = np.abs(ours - truth).max() / unit, np.abs(torch_f32 - truth).max() / unit
    # two float32 roundings at the bias's scale (the bias added, then the ULPS allowance); a sum
    # started from the bias rounds there once per tap
    bound = 2 * np.finfo(np.float32).eps * 0.5 / unit + ULPS
    print(f"[parity] conv kernel, 1e-5 signal on a 0.5 bias ({dims}-D): max error {err:.1f} units of the signal's "
          f"scale, torch float32 {torch_err:.1f} | bound <= {bound:.1f} (two roundings at the bias's scale + {ULPS})")
    assert err <= bound
