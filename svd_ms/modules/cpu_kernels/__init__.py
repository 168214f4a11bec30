"""Kernels for MindSpore's CPU backend compiled ahead of time by the project's install step
(`python -m svd_ms.modules.cpu_kernels`, which scripts/setup.sh runs), and called through
`ops.Custom(func_type="aot")`.

`exact_gelu.cc`: the exact (erf) GELU, and the gated GELU of GEGLU (value * gelu(gate) from the
projection's two halves in one pass); `group_norm.cc` and `layer_norm.cc`: GroupNorm's (with the
SiLU that follows it in the residual blocks, optionally) and LayerNorm's forward passes;
`conv2d.cc`: stride-1 convolutions (3x3, and the (K, 1) form of temporal ones) through oneDNN's
direct convolutions on channel-blocked data, in the kernels' own instance of the oneDNN library
MindSpore ships (`onednn.h`: a copy beside the kernel library, PRIVATE_ONEDNN, so that the
policy's ISA cap on MindSpore's instance does not hold them back);
`attention.cc`: multi-head attention reading each head where it lies in (B, N, heads * d), two
GEMMs around a row softmax per block of queries. All sources go into one library. Where to use it is the
device policy's decision (`policy.cpu_gelu_kernel` and its neighbours); without a built library
the layers keep their composed operators and say so once. The library's file name carries a hash
of its sources and flags, so an edited source is never served by an older build.
"""
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path
from typing import List, Optional

import numpy as np
from mindspore import ops

SOURCE_DIR = Path(__file__).parent
BUILD_DIR = SOURCE_DIR / "build"
LIBRARY_STEM = "libsvd_ms_cpu_kernels"
PRIVATE_ONEDNN = "libsvd_ms_onednn.so"  # the name onednn.h loads
INV_SQRT2 = 0.7071067811865476
INV_SQRT_2PI = 0.3989422804014327


def host_isa() -> str:
    """'avx2' on x86 hosts with AVX2 and FMA (glibc's 8-wide vector erff), else 'generic'."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return "generic"
    try:
        flags = next((line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")), "")
    except OSError:
        return "generic"
    return "avx2" if {"avx2", "fma"} <= set(flags.split()) else "generic"


def compile_flags(isa: str) -> List[str]:
    flags = ["-std=c++17", "-O3", "-fno-math-errno", "-fopenmp-simd", "-shared", "-fPIC"]
    return flags + (["-mavx2", "-mfma"] if isa == "avx2" else [])


def mindspore_onednn() -> Path:
    """The oneDNN library inside MindSpore's package (its `dnnl_sgemm` serves conv2d.cc)."""
    import mindspore
    found = sorted((Path(mindspore.__file__).parent / "lib").glob("libdnnl.so*"))
    if not found:
        raise RuntimeError(f"MindSpore's oneDNN library (libdnnl.so*) is not in {Path(mindspore.__file__).parent / 'lib'}")
    return found[-1]


def link_flags(onednn: Path) -> List[str]:
    return [f"-L{onednn.parent}", f"-l:{onednn.name}", f"-Wl,-rpath,{onednn.parent}", "-lpthread", "-ldl", "-lm"]


def sources() -> List[Path]:
    return sorted(SOURCE_DIR.glob("*.cc"))


def headers() -> List[Path]:
    return sorted(SOURCE_DIR.glob("*.h"))


def library_path(isa: Optional[str] = None) -> Path:
    isa = isa or host_isa()
    digest = hashlib.sha256()
    for source in sources() + headers():
        digest.update(source.name.encode() + b"\0" + source.read_bytes())
    digest.update(" ".join(compile_flags(isa) + link_flags(mindspore_onednn())).encode())
    return BUILD_DIR / f"{LIBRARY_STEM}-{isa}-{digest.hexdigest()[:12]}.so"


def place_private_onednn() -> Path:
    """Copy MindSpore's oneDNN library beside the kernels (a no-op when the copy is current): the
    kernels load it as an instance of their own (onednn.h)."""
    source, target = mindspore_onednn(), BUILD_DIR / PRIVATE_ONEDNN
    current = target.exists() and target.stat().st_size == source.stat().st_size \
        and target.stat().st_mtime == source.stat().st_mtime
    if not current:
        BUILD_DIR.mkdir(exist_ok=True)
        partial = target.with_suffix(f".{os.getpid()}.tmp")
        shutil.copy2(source, partial)
        os.replace(partial, target)  # a process that loaded the old copy keeps it
    return target


def build(compiler: Optional[str] = None) -> Path:
    """Compile the library for this host (a no-op when it exists). Raises RuntimeError, one line."""
    target = library_path()
    place_private_onednn()
    if target.exists():
        return target
    compiler = compiler or os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if not compiler:
        raise RuntimeError("no C++ compiler found (install g++, or set CXX)")
    BUILD_DIR.mkdir(exist_ok=True)
    partial = target.with_suffix(f".{os.getpid()}.tmp")
    command = [compiler, *compile_flags(host_isa()), "-o", str(partial), *map(str, sources()),
               *link_flags(mindspore_onednn())]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        partial.unlink(missing_ok=True)
        first = (done.stderr.strip().splitlines() or ["no message"])[0]
        raise RuntimeError(f"{command[0]} failed: {first}")
    os.replace(partial, target)  # whole file or none: a reader never loads a half-written library
    for older in BUILD_DIR.glob(f"{LIBRARY_STEM}-*.so"):
        if older != target:
            older.unlink(missing_ok=True)
    return target


# Gradients (training) in composed operators, from d/dx [x Phi(x)] = Phi(x) + x phi(x).
def _gelu_and_slope(x):
    cdf = (ops.erf(x * INV_SQRT2) + 1.0) * 0.5
    return x * cdf, cdf + x * ops.exp(x * x * -0.5) * INV_SQRT_2PI


def _exact_gelu_bprop(x, out, dout):
    return (dout * _gelu_and_slope(x)[1],)


def _gated_gelu_bprop(h, out, dout):
    value, gate = ops.chunk(h, 2, axis=-1)
    activation, slope = _gelu_and_slope(gate)
    return (ops.cat([dout * activation, dout * value * slope], axis=-1),)


def _halved(shape):
    return list(shape[:-1]) + [shape[-1] // 2]


@functools.lru_cache(maxsize=None)
def _library() -> Optional[Path]:
    try:
        path = library_path()
    except RuntimeError as exc:
        print(f"note: GELU, GroupNorm and convolutions run as composed or native operators: {exc}",
              file=sys.stderr, flush=True)
        return None
    if path.exists():
        return path
    print("note: GELU, GroupNorm and convolutions run as composed or native operators: the CPU kernels are not built "
          "(python -m svd_ms.modules.cpu_kernels)", file=sys.stderr, flush=True)
    return None


@functools.lru_cache(maxsize=None)
def exact_gelu_op():
    """x -> gelu(x) on float32 as a MindSpore operator, or None when this host's library is not
    built (said once on stderr)."""
    path = _library()
    if path is None:
        return None
    return ops.Custom(f"{path}:ExactGeluFloat32", out_shape=lambda shape: shape, out_dtype=lambda dtype: dtype,
                      func_type="aot", bprop=_exact_gelu_bprop)


@functools.lru_cache(maxsize=None)
def gated_gelu_op():
    """h (..., 2n) -> h[..., :n] * gelu(h[..., n:]) on float32, or None as exact_gelu_op."""
    path = _library()
    if path is None:
        return None
    return ops.Custom(f"{path}:GatedExactGeluFloat32", out_shape=_halved, out_dtype=lambda dtype: dtype,
                      func_type="aot", bprop=_gated_gelu_bprop)


def _group_norm_bprop(groups: int, eps: float, silu: bool):
    """GroupNorm's gradients in composed operators: with n = (x - mean) / std per group and g =
    dout * weight, dx = (g - mean(g) - n * mean(g * n)) / std over each group; dweight and dbias
    sum dout * n and dout over samples and positions. After SiLU, dout first takes SiLU's slope at
    the normalised output a: s + a s (1 - s), s = sigmoid(a)."""
    def bprop(x, weight, bias, settings, out, dout):
        samples, channels = x.shape[0], x.shape[1]
        rows = x.reshape(samples, groups, -1)
        centred = rows - rows.mean(axis=-1, keep_dims=True)
        inv_std = ops.rsqrt((centred * centred).mean(axis=-1, keep_dims=True) + eps)
        normalised = centred * inv_std
        if silu:
            affine_shape = (1, channels) + (1,) * (x.ndim - 2)
            a = normalised.reshape(x.shape) * weight.reshape(affine_shape) + bias.reshape(affine_shape)
            s = ops.sigmoid(a)
            dout = dout * (s + a * s * (1 - s))
        upstream = dout.reshape(samples, channels, -1)
        dweight = (upstream * normalised.reshape(samples, channels, -1)).sum(axis=(0, 2))
        dbias = upstream.sum(axis=(0, 2))
        scaled = (upstream * weight.reshape(1, channels, 1)).reshape(samples, groups, -1)
        dx = inv_std * (scaled - scaled.mean(axis=-1, keep_dims=True)
                        - normalised * (scaled * normalised).mean(axis=-1, keep_dims=True))
        return dx.reshape(x.shape), dweight, dbias, ops.zeros_like(settings)
    return bprop


@functools.lru_cache(maxsize=None)
def group_norm_op(groups: int, eps: float, silu: bool = False):
    """(x (N, C, *), weight (C), bias (C), [groups, eps, silu, threads]) -> GroupNorm(x), or
    SiLU(GroupNorm(x)) with `silu`, on float32 for these groups and eps (the backward needs them
    as constants, and the settings' silu must agree), or None as exact_gelu_op."""
    path = _library()
    if path is None:
        return None
    return ops.Custom(f"{path}:GroupNormFloat32", out_shape=lambda x, *_: x, out_dtype=lambda x, *_: x,
                      func_type="aot", bprop=_group_norm_bprop(int(groups), float(eps), bool(silu)))


def group_norm_settings(groups: int, eps: float, silu: bool, threads: int) -> np.ndarray:
    """group_norm_op's settings operand."""
    return np.array([groups, eps, 1.0 if silu else 0.0, threads], np.float32)


def _conv2d_grads(x, weight, dout, pad_h: int, pad_w: int):
    """(dx, dweight, dbias) of the stride-1 convolution on 4-D tensors: dx is the convolution of
    dout with the weight's channels swapped and taps reversed (padding K - 1 - pad per axis);
    dweight's tap (dy, dx) sums dout against the padded input shifted by (dy, dx); dbias sums dout."""
    samples, in_channels = x.shape[0], x.shape[1]
    out_channels, kernel_h, kernel_w = weight.shape[0], weight.shape[2], weight.shape[3]
    out_h, out_w = dout.shape[2], dout.shape[3]
    swapped = ops.reverse(weight.transpose(1, 0, 2, 3), [2, 3])
    dx = ops.conv2d(dout, swapped, None, 1, "pad", (kernel_h - 1 - pad_h, kernel_w - 1 - pad_w))
    padded = ops.pad(x, (pad_w, pad_w, pad_h, pad_h))
    rows = dout.reshape(samples, out_channels, -1)
    per_tap = []
    for dy in range(kernel_h):
        for dxx in range(kernel_w):
            shifted = padded[:, :, dy:dy + out_h, dxx:dxx + out_w].reshape(samples, in_channels, -1)
            per_tap.append(ops.bmm(rows, shifted.transpose(0, 2, 1)).sum(axis=0))
    dweight = ops.stack(per_tap, axis=2).reshape(weight.shape)
    return dx, dweight, rows.sum(axis=(0, 2))


def _conv2d_bprop(pad_h: int, pad_w: int):
    """The stride-1 convolution's gradients in composed operators (_conv2d_grads); a temporal
    convolution's 5-D tensors are taken as the 4-D ones over (time, height * width)."""
    def bprop(x, weight, bias, settings, out, dout):
        if x.ndim == 5:
            dx, dweight, dbias = _conv2d_grads(x.reshape(x.shape[:3] + (-1,)), weight.reshape(weight.shape[:3] + (1,)),
                                               dout.reshape(dout.shape[:3] + (-1,)), pad_h, pad_w)
            return dx.reshape(x.shape), dweight.reshape(weight.shape), dbias, ops.zeros_like(settings)
        dx, dweight, dbias = _conv2d_grads(x, weight, dout, pad_h, pad_w)
        return dx, dweight, dbias, ops.zeros_like(settings)
    return bprop


@functools.lru_cache(maxsize=None)
def conv2d_op(pad_h: int, pad_w: int):
    """(x (N, C_in, H, W), weight (C_out, C_in, KH, KW), bias (C_out), [pad_h, pad_w, threads]) ->
    the stride-1 convolution with that zero padding, on float32; or None as exact_gelu_op. A
    temporal convolution passes x (N, C_in, T, H, W) and weight (C_out, C_in, K, 1, 1) as they are.
    The padding is fixed per operator because the backward needs it as a constant."""
    path = _library()
    if path is None:
        return None

    def out_shape(x, weight, bias, settings):
        if len(x) == 5:  # a temporal (K, 1, 1) convolution over (N, C, T, H, W)
            return [x[0], weight[0], x[2] + 2 * pad_h - weight[2] + 1, x[3], x[4]]
        return [x[0], weight[0], x[2] + 2 * pad_h - weight[2] + 1, x[3] + 2 * pad_w - weight[3] + 1]
    return ops.Custom(f"{path}:Conv2dFloat32", out_shape=out_shape, out_dtype=lambda x, *_: x,
                      func_type="aot", bprop=_conv2d_bprop(int(pad_h), int(pad_w)))


def _split_heads(t, heads: int):
    """(B, N, heads * d) -> (B * heads, N, d)."""
    b, n, width = t.shape
    return t.reshape(b, n, heads, width // heads).transpose(0, 2, 1, 3).reshape(b * heads, n, width // heads)


def _merge_heads(t, heads: int):
    """(B * heads, N, d) -> (B, N, heads * d)."""
    bh, n, d = t.shape
    return t.reshape(bh // heads, heads, n, d).transpose(0, 2, 1, 3).reshape(bh // heads, n, heads * d)


def _attention_bprop(heads: int, scale: float):
    """Attention's gradients in composed operators, per head, from the probabilities P recomputed:
    dv = P^T do, dP = do v^T, dS = P (dP - rowsum(dP P)), dq = scale dS k, dk = scale dS^T q."""
    def bprop(q, k, v, settings, out, dout):
        qh, kh, vh, gh = (_split_heads(t, heads) for t in (q, k, v, dout))
        probs = ops.softmax(ops.bmm(qh * scale, kh.transpose(0, 2, 1)), axis=-1)
        dv = ops.bmm(probs.transpose(0, 2, 1), gh)
        dprobs = ops.bmm(gh, vh.transpose(0, 2, 1))
        dscores = probs * (dprobs - (dprobs * probs).sum(axis=-1, keepdims=True))
        dq = ops.bmm(dscores, kh) * scale
        dk = ops.bmm(dscores.transpose(0, 2, 1), qh) * scale
        return _merge_heads(dq, heads), _merge_heads(dk, heads), _merge_heads(dv, heads), ops.zeros_like(settings)
    return bprop


@functools.lru_cache(maxsize=None)
def attention_op(heads: int, scale: float):
    """(q (B, Nq, heads * d), k and v (B, Nk, heads * d), [heads, scale, threads]) -> softmax(scale
    q k^T) v per head, (B, Nq, heads * d), on float32; or None as exact_gelu_op. Heads and scale
    are fixed per operator because the backward needs them as constants."""
    path = _library()
    if path is None:
        return None
    return ops.Custom(f"{path}:AttentionFloat32", out_shape=lambda q, *_: q, out_dtype=lambda q, *_: q,
                      func_type="aot", bprop=_attention_bprop(int(heads), float(scale)))


def _layer_norm_bprop(eps: float):
    """LayerNorm's gradients in composed operators, as GroupNorm's over one group per row: with
    n = (x - mean) / std and g = dout * weight, dx = (g - mean(g) - n * mean(g * n)) / std;
    dweight and dbias sum dout * n and dout over the rows."""
    def bprop(x, weight, bias, settings, out, dout):
        centred = x - x.mean(axis=-1, keep_dims=True)
        inv_std = ops.rsqrt((centred * centred).mean(axis=-1, keep_dims=True) + eps)
        normalised = centred * inv_std
        rows = tuple(range(x.ndim - 1))
        scaled = dout * weight
        dx = inv_std * (scaled - scaled.mean(axis=-1, keep_dims=True)
                        - normalised * (scaled * normalised).mean(axis=-1, keep_dims=True))
        return dx, (dout * normalised).sum(axis=rows), dout.sum(axis=rows), ops.zeros_like(settings)
    return bprop


@functools.lru_cache(maxsize=None)
def layer_norm_op(eps: float):
    """(x (..., C), weight (C), bias (C), [eps]) -> LayerNorm over the last axis on float32, or None
    as exact_gelu_op. eps is fixed per operator because the backward needs it as a constant."""
    path = _library()
    if path is None:
        return None
    return ops.Custom(f"{path}:LayerNormFloat32", out_shape=lambda x, *_: x, out_dtype=lambda x, *_: x,
                      func_type="aot", bprop=_layer_norm_bprop(float(eps)))


def _linear_bprop(x, weight, bias, settings, out, dout):
    """The linear layer's gradients in composed operators: dx = dout W, dW = dout^T x, db = sum dout."""
    rows = dout.reshape(-1, dout.shape[-1])
    dx = ops.matmul(rows, weight).reshape(x.shape)
    dweight = ops.matmul(rows.transpose(1, 0), x.reshape(-1, x.shape[-1]))
    return dx, dweight, rows.sum(axis=0), ops.zeros_like(settings)


@functools.lru_cache(maxsize=None)
def linear_op():
    """(x (..., C), weight (O, C), bias (O), [threads]) -> x W^T + b, (..., O), on float32; or None
    as exact_gelu_op."""
    path = _library()
    if path is None:
        return None
    return ops.Custom(f"{path}:LinearFloat32", out_shape=lambda x, weight, *_: list(x[:-1]) + [weight[0]],
                      out_dtype=lambda x, *_: x, func_type="aot", bprop=_linear_bprop)
