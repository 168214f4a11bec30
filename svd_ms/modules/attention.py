"""Spatial attention blocks of the UNet (sgm.modules.attention)."""
from typing import Optional

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn, ops

from .. import policy
from ..runtime.budget import ATTENTION_CHUNK_BYTES  # the math attention's largest score tensor at once
from .cpu_kernels import attention_op, gated_gelu_op
from .layers import GELU, Conv2d, GroupNorm, Identity, LayerNorm, Linear


_bmm = ops.BatchMatMul()
_bmm_nt = ops.BatchMatMul(transpose_b=True)


def _attention_core(q, k, v, scale):
    """softmax(scale * q k^T) v on (B, N, d) tensors, the scores and softmax in float32."""
    scores = _bmm_nt(ops.cast(q, ms.float32) * scale, ops.cast(k, ms.float32))
    probs = ops.softmax(scores, axis=-1)
    return _bmm(ops.cast(probs, v.dtype), v)


def _flash_attention(q, k, v, heads: int, scale: float):
    """The fused Ascend kernel on (B, N, heads*d) tensors, within its documented limits: q, k, v
    in float16/bfloat16 (float32 is rounded for it, see policy.flash_attention_dtype) and at most
    policy.FLASH_MAX_BATCH batch items per call (temporal attention at 576x1024 has 18432)."""
    dtype = q.dtype
    kernel_dtype = policy.flash_attention_dtype(dtype)
    if kernel_dtype != dtype:
        q, k, v = ops.cast(q, kernel_dtype), ops.cast(k, kernel_dtype), ops.cast(v, kernel_dtype)
    b = q.shape[0]
    step = policy.FLASH_MAX_BATCH
    pieces = []
    for start in range(0, b, step):
        stop = min(b, start + step)
        qs, ks, vs = (q, k, v) if (start, stop) == (0, b) else (q[start:stop], k[start:stop], v[start:stop])
        pieces.append(ops.flash_attention_score(qs, ks, vs, heads, scalar_value=scale, input_layout="BSH"))
    out = pieces[0] if len(pieces) == 1 else ops.cat(pieces, axis=0)
    return out if kernel_dtype == dtype else ops.cast(out, dtype)


def cpu_attention_kernel(heads: int, head_dim: int, implementation: str):
    """(operator, settings) of the project's float32 CPU attention kernel for this head layout,
    where the policy takes it for the 'math' implementation and the kernel is built; else (None,
    None). The layers hand both to scaled_dot_product_attention in inference."""
    if implementation != "math" or not policy.cpu_attention_kernel():
        return None, None
    scale = head_dim ** -0.5
    kernel = attention_op(heads, scale)
    if kernel is None:
        return None, None
    from ..runtime.threads import kernel_threads
    return kernel, Tensor(np.array([heads, scale, kernel_threads()], np.float32))


def scaled_dot_product_attention(q, k, v, heads: int, implementation: str, kernel=None, kernel_settings=None):
    """Multi-head attention on (B, N, heads*d) tensors, returning (B, N, heads*d) in q's dtype.

    'math' forms the scores and the softmax in float32 whatever the input dtype, through the CPU
    `kernel` (cpu_attention_kernel) where one is given and q, k, v are float32; 'flash' is the
    fused Ascend kernel, which never materialises the (N, N) score matrix (head layouts the kernel
    does not take run the math path).
    """
    b, n_q, inner = q.shape
    d = inner // heads
    scale = d ** -0.5
    n_kv = k.shape[1]
    if n_kv == 1:
        # One key (SVD's image-embedding context): the softmax is exactly 1, so every query gets
        # v. Same values as the general path, and it keeps MindSpore 2.10's PyNative autodiff off
        # a softmax over a length-1 axis, whose backward corrupts the gradients of earlier
        # attention layers on CPU (q/k gradients off by O(1) relative in the video UNet;
        # tests/test_training_loss.py fails without this).
        return ops.broadcast_to(v, (b, n_q, inner))
    if kernel is not None and q.dtype == ms.float32 and k.dtype == ms.float32 and v.dtype == ms.float32:
        return kernel(q, k, v, kernel_settings)
    if implementation == "flash" and policy.flash_attention_fits(heads, d):
        return _flash_attention(q, k, v, heads, scale)
    per_item = heads * n_q * n_kv * 4
    step = max(1, min(b, ATTENTION_CHUNK_BYTES // max(per_item, 1)))
    pieces = []
    for start in range(0, b, step):
        stop = min(b, start + step)
        qs, ks, vs = (q, k, v) if (start, stop) == (0, b) else (q[start:stop], k[start:stop], v[start:stop])
        m = stop - start
        if heads == 1:
            # No head axis to move: (B, N, d) feeds the batched matmuls directly.
            out = _attention_core(qs, ks, vs, scale)
        else:
            qh = qs.reshape(m, n_q, heads, d).transpose(0, 2, 1, 3).reshape(m * heads, n_q, d)
            kh = ks.reshape(m, n_kv, heads, d).transpose(0, 2, 1, 3).reshape(m * heads, n_kv, d)
            vh = vs.reshape(m, n_kv, heads, d).transpose(0, 2, 1, 3).reshape(m * heads, n_kv, d)
            out = _attention_core(qh, kh, vh, scale)
            out = out.reshape(m, heads, n_q, d).transpose(0, 2, 1, 3).reshape(m, n_q, inner)
        pieces.append(out)
    return pieces[0] if len(pieces) == 1 else ops.cat(pieces, axis=0)


class CrossAttention(nn.Cell):
    def __init__(self, query_dim, context_dim=None, heads=8, dim_head=64, dropout=0.0, backend=None,
                 attention: str = "auto"):
        super().__init__()
        inner_dim = dim_head * heads
        context_dim = context_dim if context_dim is not None else query_dim
        self.heads = heads
        self.to_q = Linear(query_dim, inner_dim, bias=False)
        self.to_k = Linear(context_dim, inner_dim, bias=False)
        self.to_v = Linear(context_dim, inner_dim, bias=False)
        self.to_out = nn.SequentialCell([Linear(inner_dim, query_dim), Identity()])
        self.implementation = policy.attention_implementation(attention)
        self.kernel, self.kernel_settings = cpu_attention_kernel(heads, dim_head, self.implementation)

    def construct(self, x, context=None):
        if context is None:
            context = x
        q = self.to_q(x)
        k = self.to_k(context)
        v = self.to_v(context)
        kernel = None if self.training else self.kernel
        out = scaled_dot_product_attention(q, k, v, self.heads, self.implementation, kernel, self.kernel_settings)
        return self.to_out(out)


# The xformers variant upstream computes the same function.
MemoryEfficientCrossAttention = CrossAttention


class GEGLU(nn.Cell):
    """value * gelu(gate) from one projection's two halves; float32 on CPU in one kernel pass
    (`policy.cpu_gelu_kernel`), which spares MindSpore's copies of the two strided halves."""

    def __init__(self, dim_in, dim_out):
        super().__init__()
        self.proj = Linear(dim_in, dim_out * 2)
        self.gelu = GELU()
        self.gated_kernel = gated_gelu_op() if policy.cpu_gelu_kernel() else None

    def construct(self, x):
        # The projection's own output reaches the gated kernel; a reshaped (..., 2 * dim) view would
        # be copied first (42 MB per call at the top level of a 4x128 video). The linear kernel
        # takes the tokens as they are; the composed projection is given rows and returns rows.
        whole = self.proj.takes_kernel()
        lead = x.shape[:-1]
        h = self.proj(x) if whole else self.proj(x.reshape(-1, x.shape[-1]))
        if self.gated_kernel is not None and h.dtype == ms.float32:
            y = self.gated_kernel(h)
        else:
            value, gate = ops.chunk(h, 2, axis=-1)
            y = value * self.gelu(gate)
        return y if whole else y.reshape(lead + (y.shape[-1],))


class FeedForward(nn.Cell):
    """MLP of the transformer blocks. `chunk_size` processes the token axis in pieces of that
    many tokens to bound the (tokens x 4*dim) hidden activation; results are identical."""

    def __init__(self, dim, dim_out=None, mult=4, glu=False, dropout=0.0, chunk_size: Optional[int] = None):
        super().__init__()
        inner_dim = int(dim * mult)
        dim_out = dim_out if dim_out is not None else dim
        project_in = GEGLU(dim, inner_dim) if glu else nn.SequentialCell([Linear(dim, inner_dim), GELU()])
        self.net = nn.SequentialCell([project_in, Identity(), Linear(inner_dim, dim_out)])
        self.chunk_size = chunk_size

    def construct(self, x):
        if self.chunk_size is None or x.shape[1] <= self.chunk_size:
            return self.net(x)
        n = x.shape[1]
        pieces = []
        for start in range(0, n, self.chunk_size):
            pieces.append(self.net(x[:, start:min(start + self.chunk_size, n)]))
        return ops.cat(pieces, axis=1)


class BasicTransformerBlock(nn.Cell):
    def __init__(self, dim, n_heads, d_head, dropout=0.0, context_dim=None, gated_ff=True, checkpoint=False,
                 disable_self_attn=False, attn_mode="softmax", sdp_backend=None, attention: str = "auto",
                 ff_chunk_size: Optional[int] = None):
        super().__init__()
        self.disable_self_attn = disable_self_attn
        self.attn1 = CrossAttention(dim, context_dim=context_dim if disable_self_attn else None, heads=n_heads,
                                    dim_head=d_head, attention=attention)
        self.ff = FeedForward(dim, glu=gated_ff, chunk_size=ff_chunk_size)
        self.attn2 = CrossAttention(dim, context_dim=context_dim, heads=n_heads, dim_head=d_head,
                                    attention=attention)
        self.norm1 = LayerNorm(dim)
        self.norm2 = LayerNorm(dim)
        self.norm3 = LayerNorm(dim)

    def construct(self, x, context=None):
        x = self.attn1(self.norm1(x), context if self.disable_self_attn else None) + x
        x = self.attn2(self.norm2(x), context) + x
        x = self.ff(self.norm3(x)) + x
        return x


class SpatialTransformer(nn.Cell):
    """Transformer over the pixels of a (B, C, H, W) feature map."""

    def __init__(self, in_channels, n_heads, d_head, depth=1, dropout=0.0, context_dim=None,
                 disable_self_attn=False, use_linear=False, attn_type="softmax", use_checkpoint=False,
                 sdp_backend=None, attention: str = "auto", ff_chunk_size: Optional[int] = None):
        super().__init__()
        if isinstance(context_dim, (list, tuple)):
            context_dim = list(context_dim)
        else:
            context_dim = [context_dim] * depth
        if len(context_dim) != depth:
            context_dim = depth * [context_dim[0]]
        self.in_channels = in_channels
        inner_dim = n_heads * d_head
        self.norm = GroupNorm(32, in_channels, eps=1e-6)
        self.proj_in = Linear(in_channels, inner_dim) if use_linear else Conv2d(in_channels, inner_dim, 1)
        self.transformer_blocks = nn.CellList([
            BasicTransformerBlock(inner_dim, n_heads, d_head, context_dim=context_dim[i],
                                  disable_self_attn=disable_self_attn, attention=attention,
                                  ff_chunk_size=ff_chunk_size)
            for i in range(depth)
        ])
        self.proj_out = Linear(inner_dim, in_channels) if use_linear else Conv2d(inner_dim, in_channels, 1)
        self.use_linear = use_linear

    def to_tokens(self, x):
        b, c, h, w = x.shape
        x = self.norm(x)
        if not self.use_linear:
            x = self.proj_in(x)
        x = x.reshape(b, x.shape[1], h * w).transpose(0, 2, 1)
        if self.use_linear:
            x = self.proj_in(x)
        return x

    def from_tokens(self, x, h, w):
        if self.use_linear:
            x = self.proj_out(x)
        b, n, c = x.shape
        x = x.transpose(0, 2, 1).reshape(b, c, h, w)
        if not self.use_linear:
            x = self.proj_out(x)
        return x

    def construct(self, x, context=None):
        _, _, h, w = x.shape
        x_in = x
        x = self.to_tokens(x)
        for block in self.transformer_blocks:
            x = block(x, context)
        return self.from_tokens(x, h, w) + x_in
