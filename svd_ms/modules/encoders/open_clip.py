"""The OpenCLIP vision tower used as SVD's image embedder, and its preprocessing.

Parameter names follow open_clip's `model.visual.*` so upstream checkpoints load by name.
"""
from typing import Dict, Union

import mindspore as ms
import numpy as np
from mindspore import Parameter, nn, ops
from mindspore.common.initializer import initializer

from ..attention import cpu_attention_kernel, scaled_dot_product_attention
from ..layers import GELU, Conv2d, LayerNorm, Linear, linear
from ... import policy

# Vision-tower shapes by open_clip model name. "ViT-T-14-test" is the tiny tower of the shared
# upstream reference fixture (same structure as ViT-H-14, smaller numbers).
VISION_ARCHS: Dict[str, Dict[str, int]] = {
    "ViT-H-14": dict(embed_dim=1024, image_size=224, patch_size=14, width=1280, layers=32, head_width=80),
    "ViT-T-14-test": dict(embed_dim=32, image_size=224, patch_size=14, width=64, layers=2, head_width=32),
}
ARCH_KEYS = ("embed_dim", "image_size", "patch_size", "width", "layers", "head_width")
# open_clip's `-quickgelu` towers (and transformers' CLIPVisionConfig default) use x * sigmoid(1.702 x).
OPTIONAL_ARCH_KEYS = ("quick_gelu",)

CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], np.float32)
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711], np.float32)


def resolve_arch(arch: Union[str, Dict]) -> Dict[str, int]:
    if isinstance(arch, str):
        if arch not in VISION_ARCHS:
            raise ValueError(f"unknown OpenCLIP arch '{arch}'; known: {sorted(VISION_ARCHS)}, "
                             f"or give a dict with keys {ARCH_KEYS}")
        return dict(VISION_ARCHS[arch])
    arch = dict(arch)
    missing = [k for k in ARCH_KEYS if k not in arch]
    if missing:
        raise ValueError(f"OpenCLIP arch dict lacks {missing}")
    unknown = [k for k in arch if k not in ARCH_KEYS + OPTIONAL_ARCH_KEYS]
    if unknown:
        raise ValueError(f"OpenCLIP arch dict has unknown keys {unknown}")
    resolved = {k: int(arch[k]) for k in ARCH_KEYS}
    if arch.get("quick_gelu"):
        resolved["quick_gelu"] = True
    return resolved


# ---- preprocessing (host side, numpy) -------------------------------------------------------

def _gaussian_kernel1d(size: int, sigma: float) -> np.ndarray:
    x = np.arange(size, dtype=np.float64) - size // 2
    if size % 2 == 0:
        x = x + 0.5
    k = np.exp(-(x ** 2) / (2.0 * sigma ** 2))
    return k / k.sum()


def _blur_axis(x: np.ndarray, kernel: np.ndarray, axis: int) -> np.ndarray:
    half = len(kernel) // 2
    pad = [(0, 0)] * x.ndim
    pad[axis] = (half, len(kernel) - 1 - half)
    xp = np.pad(x, pad, mode="reflect")
    out = np.zeros_like(x)
    n = x.shape[axis]
    for i, weight in enumerate(kernel):
        out += weight * np.take(xp, np.arange(i, i + n), axis=axis)
    return out


def _cubic_weights(t: np.ndarray, a: float = -0.75) -> np.ndarray:
    """Weights of the 4 taps at offsets -1, 0, 1, 2 for fractional positions t (Keys, a=-0.75)."""
    def near(d):
        return ((a + 2) * d - (a + 3)) * d * d + 1

    def far(d):
        return ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
    return np.stack([far(t + 1), near(t), near(1 - t), far(2 - t)], axis=-1)


def _bicubic_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) matrix of bicubic interpolation with align_corners=True and edge clamping."""
    scale = (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
    src = np.arange(n_out, dtype=np.float64) * scale
    base = np.floor(src).astype(np.int64)
    weights = _cubic_weights(src - base)
    m = np.zeros((n_out, n_in), np.float64)
    for tap in range(4):
        idx = np.clip(base - 1 + tap, 0, n_in - 1)
        np.add.at(m, (np.arange(n_out), idx), weights[:, tap])
    return m


def antialiased_bicubic_resize(images: np.ndarray, size=(224, 224)) -> np.ndarray:
    """(B, C, H, W) float -> (B, C, *size): Gaussian blur with sigma (factor - 1) / 2 per axis
    (kornia's antialias rule, reflect borders), then bicubic resampling with align_corners=True."""
    x = images.astype(np.float64)
    h, w = x.shape[-2:]
    factors = (h / size[0], w / size[1])
    sigmas = [max((f - 1.0) / 2.0, 0.001) for f in factors]
    sizes = [int(max(2.0 * 2 * s, 3)) for s in sigmas]
    sizes = [s + 1 if s % 2 == 0 else s for s in sizes]
    x = _blur_axis(x, _gaussian_kernel1d(sizes[0], sigmas[0]), axis=-2)
    x = _blur_axis(x, _gaussian_kernel1d(sizes[1], sigmas[1]), axis=-1)
    mh = _bicubic_matrix(h, size[0])
    mw = _bicubic_matrix(w, size[1])
    # Two matrix products (an unoptimised 3-operand einsum loops over every index: seconds per image).
    return np.matmul(np.matmul(mh, x), mw.T).astype(np.float32)


def clip_preprocess(images: np.ndarray, size: int = 224) -> np.ndarray:
    """Images in [-1, 1], (B, 3, H, W) -> normalised CLIP input (B, 3, size, size). No crop."""
    x = antialiased_bicubic_resize(np.asarray(images, np.float32), (size, size))
    x = (x + 1.0) / 2.0
    return ((x - CLIP_MEAN[None, :, None, None]) / CLIP_STD[None, :, None, None]).astype(np.float32)


# ---- the vision transformer -----------------------------------------------------------------

class MultiheadSelfAttention(nn.Cell):
    """torch.nn.MultiheadAttention layout: one packed in_proj for q, k and v."""

    def __init__(self, width: int, heads: int, attention: str = "auto"):
        super().__init__()
        self.heads = heads
        self.width = width
        self.in_proj_weight = Parameter(initializer("zeros", (3 * width, width), ms.float32),
                                        name="in_proj_weight")
        self.in_proj_bias = Parameter(initializer("zeros", (3 * width,), ms.float32), name="in_proj_bias")
        self.out_proj = Linear(width, width)
        self.implementation = policy.attention_implementation(attention)
        self.kernel, self.kernel_settings = cpu_attention_kernel(heads, width // heads, self.implementation)
        self.compute_dtype = ms.float32

    def construct(self, x):
        dtype = self.compute_dtype
        qkv = linear(ops.cast(x, dtype), ops.cast(self.in_proj_weight, dtype),
                     ops.cast(self.in_proj_bias, dtype))
        q, k, v = ops.chunk(qkv, 3, axis=-1)
        kernel = None if self.training else self.kernel
        return self.out_proj(scaled_dot_product_attention(q, k, v, self.heads, self.implementation, kernel,
                                                          self.kernel_settings))


class QuickGELU(nn.Cell):
    def construct(self, x):
        return x * ops.sigmoid(1.702 * x)


class Mlp(nn.Cell):
    def __init__(self, width: int, hidden: int, quick_gelu: bool = False):
        super().__init__()
        self.c_fc = Linear(width, hidden)
        self.gelu = QuickGELU() if quick_gelu else GELU()
        self.c_proj = Linear(hidden, width)

    def construct(self, x):
        return self.c_proj(self.gelu(self.c_fc(x)))


class ResidualAttentionBlock(nn.Cell):
    def __init__(self, width: int, heads: int, mlp_ratio: float = 4.0, attention: str = "auto",
                 quick_gelu: bool = False):
        super().__init__()
        self.ln_1 = LayerNorm(width)
        self.attn = MultiheadSelfAttention(width, heads, attention)
        self.ln_2 = LayerNorm(width)
        self.mlp = Mlp(width, int(width * mlp_ratio), quick_gelu)

    def construct(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Cell):
    def __init__(self, width: int, layers: int, heads: int, attention: str = "auto", quick_gelu: bool = False):
        super().__init__()
        self.resblocks = nn.CellList([ResidualAttentionBlock(width, heads, attention=attention, quick_gelu=quick_gelu)
                                      for _ in range(layers)])

    def construct(self, x):
        for block in self.resblocks:
            x = block(x)
        return x


class VisionTransformer(nn.Cell):
    """Patch embedding, class token, pre-LN transformer, LN on the class token, projection."""

    def __init__(self, embed_dim, image_size, patch_size, width, layers, head_width, attention: str = "auto",
                 quick_gelu: bool = False):
        super().__init__()
        grid = image_size // patch_size
        self.image_size = image_size
        self.conv1 = Conv2d(3, width, patch_size, stride=patch_size, bias=False)
        self.class_embedding = Parameter(initializer("zeros", (width,), ms.float32), name="class_embedding")
        self.positional_embedding = Parameter(initializer("zeros", (grid * grid + 1, width), ms.float32),
                                              name="positional_embedding")
        self.ln_pre = LayerNorm(width)
        self.transformer = Transformer(width, layers, width // head_width, attention, quick_gelu)
        self.ln_post = LayerNorm(width)
        self.proj = Parameter(initializer("zeros", (width, embed_dim), ms.float32), name="proj")

    def construct(self, pixels):
        x = self.conv1(pixels)
        b, c = x.shape[0], x.shape[1]
        x = x.reshape(b, c, -1).swapaxes(1, 2)
        cls = ops.broadcast_to(ops.cast(self.class_embedding, x.dtype).reshape(1, 1, c), (b, 1, c))
        x = ops.cat([cls, x], axis=1) + ops.cast(self.positional_embedding, x.dtype)
        x = self.transformer(self.ln_pre(x))
        pooled = self.ln_post(x[:, 0])
        return ops.matmul(pooled, ops.cast(self.proj, pooled.dtype))


class OpenCLIPVisionModel(nn.Cell):
    """Holds the tower as `.visual`, mirroring open_clip's CLIP object (whose text tower SVD drops)."""

    def __init__(self, arch: Union[str, Dict], attention: str = "auto"):
        super().__init__()
        self.arch = resolve_arch(arch)
        self.visual = VisionTransformer(attention=attention, **self.arch)
