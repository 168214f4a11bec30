"""svd_ms.modules.attention: the math path against a float64 reference, and the fused (flash) path
as it runs on Ascend, through the kernel's contract double (tests/ascend/kernel_contracts.py)."""
import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor

from conftest import assert_close, assert_kernel_in_inference_only, assert_within_scale_units
from svd_ms import policy
from svd_ms.modules import attention
from svd_ms.modules.attention import CrossAttention, scaled_dot_product_attention


def _reference(q, k, v, heads):
    """softmax(q k^T / sqrt(d)) v per head, float64."""
    b, n, inner = q.shape
    d = inner // heads
    split = lambda t: t.astype(np.float64).reshape(b, -1, heads, d).transpose(0, 2, 1, 3)
    qh, kh, vh = split(q), split(k), split(v)
    s = qh @ kh.transpose(0, 1, 3, 2) / np.sqrt(d)
    p = np.exp(s - s.max(-1, keepdims=True))
    out = (p / p.sum(-1, keepdims=True)) @ vh
    return out.transpose(0, 2, 1, 3).reshape(b, n, inner)


def _qkv(shape_q, shape_kv, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape_q).astype(np.float32), rng.standard_normal(shape_kv).astype(np.float32),
            rng.standard_normal(shape_kv).astype(np.float32))


@pytest.fixture
def on_ascend(monkeypatch):
    from ascend.kernel_contracts import install
    install(monkeypatch)


def test_math_path_matches_reference():
    q, k, v = _qkv((2, 7, 32), (2, 5, 32))
    out = scaled_dot_product_attention(Tensor(q), Tensor(k), Tensor(v), 2, "math").asnumpy()
    assert_close("attention_math", out, _reference(q, k, v, 2), rel=1e-5)


def test_math_path_chunks_match_unchunked(monkeypatch):
    q, k, v = _qkv((3, 6, 32), (3, 6, 32), seed=1)
    whole = scaled_dot_product_attention(Tensor(q), Tensor(k), Tensor(v), 2, "math").asnumpy()
    monkeypatch.setattr(attention, "ATTENTION_CHUNK_BYTES", 2 * 6 * 6 * 4)  # one batch item per chunk
    chunked = scaled_dot_product_attention(Tensor(q), Tensor(k), Tensor(v), 2, "math").asnumpy()
    np.testing.assert_array_equal(chunked, whole)


def test_cross_attention_at_o0_runs_on_ascend(on_ascend):
    """The defect of issue 23: at amp_level O0 the layers compute in float32, and the fused
    kernel accepts float16 and bfloat16 only. Before the fix this raised the double's TypeError."""
    layer = CrossAttention(32, heads=2, dim_head=16)
    assert layer.implementation == "flash"
    rng = np.random.default_rng(2)
    for cell in (layer.to_q, layer.to_k, layer.to_v, layer.to_out[0]):
        cell.weight.set_data(Tensor(rng.standard_normal(cell.weight.shape).astype(np.float32) * 0.2))
    x = rng.standard_normal((2, 10, 32)).astype(np.float32)
    out = layer(Tensor(x))
    assert out.dtype == ms.float32
    expected = layer.to_out(Tensor(_reference(layer.to_q(Tensor(x)).asnumpy(), layer.to_k(Tensor(x)).asnumpy(),
                                              layer.to_v(Tensor(x)).asnumpy(), 2).astype(np.float32))).asnumpy()
    # q, k, v are rounded to float16 for the kernel and its output is float16: fp16 rounding bounds.
    assert_close("flash_attention_o0", out.asnumpy(), expected, rel=2e-3)


@pytest.mark.parametrize("dtype", [ms.float32, ms.float16])
def test_flash_path_matches_math(on_ascend, dtype):
    q, k, v = _qkv((3, 12, 64), (3, 9, 64), seed=3)
    args = [Tensor(t).astype(dtype) for t in (q, k, v)]
    out = scaled_dot_product_attention(*args, 2, "flash")
    assert out.dtype == dtype
    assert_close(f"flash_vs_reference_{dtype}", out.asnumpy(), _reference(q, k, v, 2), rel=2e-3)


def test_flash_path_splits_batches_over_the_kernel_limit(on_ascend, monkeypatch):
    """The kernel documents B in 1..2k; temporal attention at 576x1024 has B = 2 x 72 x 128."""
    monkeypatch.setattr(policy, "FLASH_MAX_BATCH", 2)
    calls = []
    from ascend import kernel_contracts
    real = kernel_contracts.flash_attention_score

    def counting(q, *args, **kwargs):
        calls.append(q.shape[0])
        return real(q, *args, **kwargs)
    monkeypatch.setattr(attention.ops, "flash_attention_score", counting)
    monkeypatch.setattr(kernel_contracts, "flash_attention_score", counting)
    q, k, v = _qkv((5, 4, 32), (5, 4, 32), seed=4)
    out = scaled_dot_product_attention(Tensor(q), Tensor(k), Tensor(v), 1, "flash").asnumpy()
    assert calls == [2, 2, 1]
    assert_close("flash_split_batches", out, _reference(q, k, v, 1), rel=2e-3)


def test_flash_falls_back_to_math_outside_the_kernel_shapes(on_ascend):
    """Head sizes the kernel does not take (D not a multiple of 16) run the math path, exactly."""
    q, k, v = _qkv((2, 5, 24), (2, 5, 24), seed=5)
    out = scaled_dot_product_attention(Tensor(q), Tensor(k), Tensor(v), 2, "flash").asnumpy()
    math = scaled_dot_product_attention(Tensor(q), Tensor(k), Tensor(v), 2, "math").asnumpy()
    np.testing.assert_array_equal(out, math)


def test_graph_mode_compiles_through_the_contract(on_ascend, monkeypatch):
    """Graph mode checks the contract at compile time: the fix compiles; the old behaviour (q, k, v
    handed over in float32) is refused there, as the kernel refuses it."""
    from engine_fixtures import graph_mode
    x = Tensor(np.random.default_rng(6).standard_normal((2, 8, 32)).astype(np.float32))
    with graph_mode():
        assert CrossAttention(32, heads=2, dim_head=16)(x).dtype == ms.float32
        monkeypatch.setattr(policy, "flash_attention_dtype", _unchanged)
        with pytest.raises(TypeError, match="float16 or bfloat16"):
            CrossAttention(32, heads=2, dim_head=16)(x)


def _unchanged(dtype):
    return dtype


# ---- the CPU kernel (svd_ms/modules/cpu_kernels/attention.cc) ------------------------------------
# (batch, queries, keys, heads, head size): cross-attention with fewer keys than queries; the UNet's
# temporal shape (thousands of tiny heads); several blocks of queries per head (4096 keys leave
# 64 queries per block); a single key-free query; one head of the VAE's width.
KERNEL_CASES = [(2, 10, 7, 2, 16), (64, 4, 4, 5, 8), (1, 130, 4096, 2, 8), (3, 1, 3, 4, 8), (2, 20, 20, 1, 64)]
# max |ours - truth| <= bound x float32 eps x max|truth|: the scores, the softmax and the second
# GEMM each round a few times; PyTorch float32's own error is printed beside.
KERNEL_ULPS = 16


def _torch_attention(q, k, v, heads, dtype, grad_of=None):
    """PyTorch's scaled_dot_product_attention on our layout; with `grad_of` (the upstream
    gradient), the gradients of q, k, v instead."""
    import torch
    b, nq, width = q.shape
    ts = [torch.from_numpy(t).to(dtype).requires_grad_(grad_of is not None) for t in (q, k, v)]
    split = lambda t: t.reshape(b, t.shape[1], heads, width // heads).transpose(1, 2)
    out = torch.nn.functional.scaled_dot_product_attention(*map(split, ts)).transpose(1, 2).reshape(b, nq, width)
    if grad_of is None:
        return out.detach().numpy()
    (out * torch.from_numpy(grad_of).to(dtype)).sum().backward()
    return [t.grad.numpy() for t in ts]


def _kernel(heads, head_dim):
    kernel, settings = attention.cpu_attention_kernel(heads, head_dim, "math")
    assert kernel is not None, "the CPU attention kernel is not built (python -m svd_ms.modules.cpu_kernels)"
    return kernel, settings


@pytest.mark.parametrize("mode", ["pynative", "graph"])
@pytest.mark.parametrize("case", KERNEL_CASES, ids=[str(c) for c in KERNEL_CASES])
def test_cpu_kernel_matches_torch(case, mode):
    import torch
    b, nq, nk, heads, d = case
    q, k, v = _qkv((b, nq, heads * d), (b, nk, heads * d), seed=3)
    q, k = q * 3.0, k * 3.0  # peaked softmaxes as well as flat ones
    kernel, settings = _kernel(heads, d)

    def run(*tensors):
        return scaled_dot_product_attention(*tensors, heads, "math", kernel, settings)
    if mode == "graph":
        run = ms.jit(run)
    ours = run(Tensor(q), Tensor(k), Tensor(v)).asnumpy()
    assert_within_scale_units(f"attention kernel {case} [{mode}]", ours, _torch_attention(q, k, v, heads, torch.float64),
                              _torch_attention(q, k, v, heads, torch.float32), KERNEL_ULPS)


@pytest.mark.parametrize("mode", ["pynative", "graph"])
def test_cpu_kernel_gradients_match_torch(mode):
    """A model in inference mode that is differentiated goes through the kernel's composed backward."""
    import torch
    b, nq, nk, heads, d = 2, 6, 5, 2, 8
    q, k, v = _qkv((b, nq, heads * d), (b, nk, heads * d), seed=5)
    upstream = np.random.default_rng(6).standard_normal(q.shape).astype(np.float32)
    kernel, settings = _kernel(heads, d)

    def loss(*tensors):
        return (kernel(*tensors, settings) * Tensor(upstream)).sum()
    grad = ms.grad(loss, grad_position=(0, 1, 2))
    if mode == "graph":
        grad = ms.jit(grad)
    ours = [g.asnumpy() for g in grad(Tensor(q), Tensor(k), Tensor(v))]
    truth = _torch_attention(q, k, v, heads, torch.float64, grad_of=upstream)
    torch_f32 = _torch_attention(q, k, v, heads, torch.float32, grad_of=upstream)
    for name, a, t, f in zip("qkv", ours, truth, torch_f32):
        assert_within_scale_units(f"attention kernel gradient of {name} [{mode}]", a, t, f, KERNEL_ULPS)


def test_layers_take_the_cpu_kernel_in_inference_only(monkeypatch):
    """CrossAttention, the VAE's AttnBlock and OpenCLIP's attention hold the kernel on CPU; a layer
    in training runs the composition (its gradients are the ones checked against upstream), and
    SVD_MS_ATTENTION_KERNEL=composed turns the kernel off."""
    from svd_ms.modules.diffusionmodules.model import AttnBlock
    from svd_ms.modules.encoders.open_clip import MultiheadSelfAttention
    layer = CrossAttention(32, heads=2, dim_head=16)
    assert all(cell.kernel is not None for cell in (layer, AttnBlock(32), MultiheadSelfAttention(32, 2)))
    rng = np.random.default_rng(7)
    for cell in (layer.to_q, layer.to_k, layer.to_v, layer.to_out[0]):  # built as zeros
        cell.weight.set_data(Tensor(rng.standard_normal(cell.weight.shape).astype(np.float32) * 0.3))
    x = rng.standard_normal((2, 9, 32)).astype(np.float32)
    assert np.abs(layer(Tensor(x)).asnumpy()).max() > 0.1
    assert_kernel_in_inference_only("attention layer", layer, [x])
    monkeypatch.setenv("SVD_MS_ATTENTION_KERNEL", "composed")
    assert CrossAttention(32, heads=2, dim_head=16).kernel is None
