"""bfloat16 on Ascend: what can be checked on this CPU host. The decision (svd_ms/policy.py,
BF16_REFUSED_BY: no bfloat16 inference level) rests on MindSpore 2.10's docstrings, checked here
against the installed package, so a MindSpore that documents bfloat16 for them fails this test and
reopens the decision. A bfloat16 pipeline run against upstream cannot be made here: MindSpore's CPU
kernels have no bfloat16 MatMul (shown below), so only the attention branch, whose fused kernel
takes bfloat16, runs in bfloat16 (through its contract double)."""
import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor, ops

from ascend import kernel_contracts
from svd_ms import policy


def _docstring(path: str) -> str:
    obj = ms
    for attr in path.split("."):
        obj = getattr(obj, attr)
    return " ".join((obj.__doc__ or "").split())


@pytest.mark.parametrize("table", ["refused", "taken"])
def test_the_quoted_docstrings_are_the_installed_ones(table):
    entries = policy.BF16_REFUSED_BY if table == "refused" else policy.BF16_TAKEN_BY
    for op, (source, quote) in entries.items():
        doc = _docstring(op)
        print(f"[bf16] {op} ({source}): {quote!r} in the installed docstring: {quote in doc}")
        assert quote in doc, f"MindSpore's {op} docstring no longer says {quote!r}: revisit bfloat16 inference"
        assert ("bfloat16" in doc) == (table == "taken"), f"{op}: its docstring's bfloat16 mention changed"


def test_bf16_amp_level_is_refused_with_the_reason():
    for asked in ("bf16", "bfloat16"):
        with pytest.raises(ValueError, match="ops.silu .*float16 and float32 only.*use O2") as err:
            policy.resolve_amp_level(asked, "Ascend")
        assert "\n" not in str(err.value)
    assert "bfloat16" not in " ".join(policy.describe("auto", device="Ascend").values())


def test_this_cpu_runtime_cannot_compute_bf16_matmuls():
    """Why no bfloat16 pipeline runs here: the UNet's Linear layers are MatMuls."""
    x = Tensor(np.ones((2, 3), np.float32)).astype(ms.bfloat16)
    with pytest.raises(TypeError, match="MatMul"):
        ops.MatMul(transpose_b=True)(x, x).asnumpy()


def test_attention_branch_keeps_bf16_for_the_fused_kernel(monkeypatch):
    """The part of the Ascend path that would take bfloat16: q, k, v stay bfloat16 for the kernel
    (no float16 rounding on the way), the double's contract accepts them, and the output is the
    float32 math within bfloat16 rounding (8 significant bits: 2^-8 relative)."""
    from svd_ms.modules import attention

    assert policy.flash_attention_dtype(ms.bfloat16) == ms.bfloat16
    seen = []

    def recording(query, *args, **kwargs):
        seen.append(query.dtype)
        return kernel_contracts.flash_attention_score(query, *args, **kwargs)

    kernel_contracts.install(monkeypatch)
    monkeypatch.setattr(ms.ops, "flash_attention_score", recording)
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((2, 24, 64)).astype(np.float32) for _ in range(3))
    want = attention.scaled_dot_product_attention(Tensor(q), Tensor(k), Tensor(v), 2, "math").asnumpy()
    got = attention.scaled_dot_product_attention(*(Tensor(t).astype(ms.bfloat16) for t in (q, k, v)), 2, "flash")
    assert seen == [ms.bfloat16] and got.dtype == ms.bfloat16
    from conftest import assert_close
    assert_close("bf16_flash_vs_float32_math", got.astype(ms.float32).asnumpy(), want, rel=2 ** -7)
