"""Stand-ins for the Ascend-only operations svd-ms calls, for running the Ascend path on a CPU host.

Each double first checks what MindSpore 2.10 documents for its operation (every check names the
docstring it comes from), raising the error type the docstring lists exactly where the real kernel
would refuse; then it computes the result with the CPU math path, rounded to the dtype the kernel
returns. `install(monkeypatch)` forces the policy to Ascend and puts the doubles in place of the
operations; models must be built after it (the policy is read when a layer is constructed).

The checks use only static facts (dtypes, shapes, Python arguments), so they run in PyNative and,
folded at compile time, in graph mode.
"""
import mindspore as ms
from mindspore import mint, ops

import svd_ms.policy as policy

OPS_DEF = "mindspore/ops/operations/manually_defined/ops_def.py, flash_attention_score docstring"
NN_FUNC = "mindspore/ops/function/nn_func.py, conv3d docstring"
MINT_INTERPOLATE = "mindspore/mint/nn/functional.py, interpolate docstring (its platform table)"
FLASH_LAYOUTS = ("BSH", "BNSD", "SBH", "BSND", "TND")

_real_conv3d = ops.conv3d
_real_interpolate = mint.nn.functional.interpolate
_bmm_nt = ops.BatchMatMul(transpose_b=True)
_bmm = ops.BatchMatMul()


def flash_attention_score(query, key, value, head_num, real_shift=None, drop_mask=None, padding_mask=None,
                          attn_mask=None, prefix=None, actual_seq_qlen=None, actual_seq_kvlen=None, keep_prob=1.0,
                          scalar_value=1.0, pre_tokens=2147483647, next_tokens=2147483647, inner_precise=0,
                          input_layout="BSH", sparse_mode=0):
    """ops.flash_attention_score's contract (OPS_DEF), then softmax(scale q k^T) v in float32."""
    # Args/query: "The supported dtype is float16 and bfloat16."; Raises: TypeError.
    if query.dtype not in (ms.float16, ms.bfloat16):
        raise TypeError(f"flash_attention_score: query dtype {query.dtype} is not float16 or bfloat16 ({OPS_DEF})")
    # Args/key, value: "with the same dtype as `query`"; Raises: TypeError.
    if key.dtype != query.dtype or value.dtype != query.dtype:
        raise TypeError(f"flash_attention_score: query, key and value dtypes differ ({OPS_DEF})")
    # Raises: "ValueError: `input_layout` is a string but not valid." Only BSH is modelled here.
    if input_layout not in FLASH_LAYOUTS:
        raise ValueError(f"flash_attention_score: input_layout '{input_layout}' is not valid ({OPS_DEF})")
    if input_layout != "BSH":
        raise NotImplementedError("this double models the BSH layout only (the layout svd-ms uses)")
    # Args/scalar_value, keep_prob: "double"; Raises: "TypeError: `scalar_value` or `keep_prob` is not a double".
    if not isinstance(scalar_value, float) or not isinstance(keep_prob, float):
        raise TypeError(f"flash_attention_score: scalar_value and keep_prob must be floats ({OPS_DEF})")
    # keep_prob: "When `keep_prob` is 1.0, `drop_mask` should be None"; svd-ms never drops.
    if keep_prob != 1.0 or drop_mask is not None or attn_mask is not None or real_shift is not None:
        raise NotImplementedError("this double models unmasked attention without dropout only")
    # Raises: "RuntimeError: `head_num` is not greater than 0"; N1: "Value range 1 to 256".
    if not isinstance(head_num, int) or head_num < 1 or head_num > 256:
        raise RuntimeError(f"flash_attention_score: head_num {head_num} is outside 1..256 ({OPS_DEF})")
    # Args/query: BSH is (B, S1, H1); key and value (B, S2, H2), value "the same dtype and shape as `key`".
    if query.ndim != 3 or key.ndim != 3 or value.shape != key.shape:
        raise RuntimeError(f"flash_attention_score: BSH needs (B, S1, H1) query and equal (B, S2, H2) key and "
                           f"value, got {query.shape}, {key.shape}, {value.shape} ({OPS_DEF})")
    b, s1, h1 = query.shape
    s2, h2 = key.shape[1], key.shape[2]
    # "B: Batch size. Value range 1 to 2k." "S1/S2: Value range 1 to 512k."
    if key.shape[0] != b or b < 1 or b > 2048:
        raise RuntimeError(f"flash_attention_score: batch {b} (key batch {key.shape[0]}) is outside 1..2048 "
                           f"({OPS_DEF}: 'B: Batch size. Value range 1 to 2k.')")
    if s1 > 512 * 1024 or s2 > 512 * 1024:
        raise RuntimeError(f"flash_attention_score: sequence lengths {s1}, {s2} exceed 512k ({OPS_DEF})")
    # "H1: Hidden size of `query`, which equals N1 * D"; "D: ... a multiple of 16, with the max value of 512".
    if h1 % head_num != 0:
        raise RuntimeError(f"flash_attention_score: hidden size {h1} is not head_num {head_num} x D ({OPS_DEF})")
    d = h1 // head_num
    if d % 16 != 0 or d > 512:
        raise RuntimeError(f"flash_attention_score: head size D={d} is not a multiple of 16 up to 512 ({OPS_DEF})")
    # "H2 ... equals N2 * D", "N2 must be a factor of N1"; Raises: "D-axis of query, key and value is not the same".
    if h2 % d != 0 or head_num % (h2 // d) != 0:
        raise RuntimeError(f"flash_attention_score: key hidden size {h2} gives no N2 dividing N1={head_num} "
                           f"with D={d} ({OPS_DEF})")
    # Returns: "the same shape and dtype as `query`". Scores and softmax in float32 (the math path).
    n2 = h2 // d
    q = ops.cast(query, ms.float32).reshape(b, s1, head_num, d).transpose(0, 2, 1, 3)
    k = ops.cast(key, ms.float32).reshape(b, s2, n2, d).transpose(0, 2, 1, 3)
    v = ops.cast(value, ms.float32).reshape(b, s2, n2, d).transpose(0, 2, 1, 3)
    if n2 != head_num:
        k = ops.repeat_interleave(k, head_num // n2, 1)
        v = ops.repeat_interleave(v, head_num // n2, 1)
    q, k, v = (t.reshape(b * head_num, -1, d) for t in (q, k, v))
    probs = ops.softmax(_bmm_nt(q * scalar_value, k), axis=-1)
    out = _bmm(probs, v).reshape(b, head_num, s1, d).transpose(0, 2, 1, 3).reshape(b, s1, h1)
    return ops.cast(out, query.dtype)


def conv3d(input, weight, bias=None, stride=1, pad_mode="valid", padding=0, dilation=1, groups=1):
    """ops.conv3d's Ascend contract (NN_FUNC), then the CPU kernel in float32, rounded to float16."""
    # Note 1 and 2: "On Ascend platform, groups = 1 must be satisfied", "dilation=1 must be satisfied".
    if groups != 1 or dilation not in (1, (1, 1, 1)):
        raise ValueError(f"conv3d on Ascend: groups={groups}, dilation={dilation}; both must be 1 ({NN_FUNC})")
    # The policy's own claim (policy.conv3d_lacks_fp32), as mindone documents for SVD on Ascend
    # ("fp32 is not supported for Conv3d"): the 910 Conv3D kernel takes float16.
    if input.dtype != ms.float16 or weight.dtype != ms.float16:
        raise TypeError(f"conv3d on Ascend: input {input.dtype}, weight {weight.dtype}; the kernel takes "
                        f"float16 (svd_ms.policy.conv3d_lacks_fp32; mindone docs)")
    # Args/input: "(N, C_in, D_in, H_in, W_in)"; weight "(C_out, C_in, k0, k1, k2)".
    if input.ndim != 5 or weight.ndim != 5 or weight.shape[1] != input.shape[1]:
        raise ValueError(f"conv3d: input {input.shape} and weight {weight.shape} do not match ({NN_FUNC})")
    # Raises: "ValueError: If `pad_mode` is not one of 'same', 'valid' or 'pad'", "If `padding` is a tuple
    # or list whose length is not equal to 3".
    if pad_mode not in ("same", "valid", "pad"):
        raise ValueError(f"conv3d: pad_mode '{pad_mode}' ({NN_FUNC})")
    if isinstance(padding, (tuple, list)) and len(padding) != 3:
        raise ValueError(f"conv3d: padding {padding} must have 3 values ({NN_FUNC})")
    y = _real_conv3d(ops.cast(input, ms.float32), ops.cast(weight, ms.float32), None, stride, pad_mode, padding)
    if bias is not None:
        y = ops.bias_add(y, ops.cast(bias, ms.float32))
    return ops.cast(y, ms.float16)


def interpolate(input, size=None, scale_factor=None, mode="nearest", align_corners=None,
                recompute_scale_factor=None):
    """mint.nn.functional.interpolate's table of supported arguments (MINT_INTERPOLATE), then the
    CPU kernel. The table lists Ascend as the only device for every row."""
    supported_dims = {"nearest": (3, 4, 5), "linear": (3,), "bilinear": (4,), "bicubic": (4,), "trilinear": (5,)}
    # Raises: "`mode` is not in the list of supported modes", "`input.ndim` is not in the list of
    # supported dimensions for the corresponding mode".
    if mode not in supported_dims or input.ndim not in supported_dims[mode]:
        raise ValueError(f"interpolate: mode '{mode}' on a {input.ndim}-D input is not in the table ({MINT_INTERPOLATE})")
    # "Both `size` and `scale_factor` are not empty" / "are empty"; nearest has no align_corners ("-").
    if (size is None) == (scale_factor is None) or (mode == "nearest" and align_corners is not None):
        raise ValueError(f"interpolate: give exactly one of size and scale_factor; nearest takes no "
                         f"align_corners ({MINT_INTERPOLATE})")
    return _real_interpolate(input, size, scale_factor, mode, align_corners, recompute_scale_factor)


# Every Ascend-only operation svd-ms calls, by its path under the mindspore package, with its double.
DOUBLES = {
    "ops.flash_attention_score": flash_attention_score,
    "ops.conv3d": conv3d,
    "mint.nn.functional.interpolate": interpolate,
}


def _ascend() -> str:
    return "Ascend"


def install(monkeypatch) -> None:
    """Force the policy to Ascend and replace every Ascend-only operation with its double."""
    monkeypatch.setattr(policy, "device_target", _ascend)
    for path, double in DOUBLES.items():
        owner = ms
        for attr in path.split(".")[:-1]:
            owner = getattr(owner, attr)
        monkeypatch.setattr(owner, path.split(".")[-1], double)
