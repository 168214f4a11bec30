"""Analytic FLOP count of one VideoUNet call (one denoiser step), from the network config.

Counts the multiply-adds of every convolution, linear layer and attention product as 2 FLOPs
each; normalisations, activations and other elementwise work are left out (they are memory-
bound and a few percent of the total). The walk mirrors VideoUNet.__init__ block by block.
"""
from typing import Dict, Sequence


def _conv(cin, cout, taps, positions):
    return 2 * cin * cout * taps * positions


def _linear(cin, cout, rows):
    return 2 * cin * cout * rows


def _attention(n_q, n_kv, inner, sequences):
    """q @ k^T and probs @ v over all heads: 2 * 2 * n_q * n_kv * inner per sequence."""
    return 4 * n_q * n_kv * inner * sequences


class _Counter:
    def __init__(self):
        self.parts: Dict[str, float] = {}

    def add(self, part, flops):
        self.parts[part] = self.parts.get(part, 0.0) + float(flops)

    @property
    def total(self):
        return sum(self.parts.values())


def unet_step_flops(params: Dict, frames: int, height: int, width: int, batch: int = 2) -> Dict[str, float]:
    """FLOPs of one VideoUNet call on `batch` videos (2 for classifier-free guidance) of
    `frames` latent frames of `height` x `width` latent pixels.

    Returns {"total", "conv", "linear", "spatial_attention", "other_attention"}:
    "spatial_attention" is the self-attention over the pixels of a frame (quadratic in pixels);
    "other_attention" is the temporal and the one-token cross-attention (linear in pixels).
    """
    mc = params["model_channels"]
    mult: Sequence[int] = params.get("channel_mult", (1, 2, 4, 8))
    nrb = params["num_res_blocks"]
    attn_res = set(params["attention_resolutions"])
    depth = params.get("transformer_depth", 1)
    depths = [depth] * len(mult) if isinstance(depth, int) else list(depth)
    depth_mid = params.get("transformer_depth_middle") or depths[-1]
    head_ch = params.get("num_head_channels", -1)
    ctx_dim = params["context_dim"]
    ff_in = params.get("extra_ff_mix_layer", False)
    kt = params.get("video_kernel_size", 3)
    kt = kt[0] if isinstance(kt, (list, tuple)) else kt
    emb = mc * 4
    n = batch * frames  # images per call
    c = _Counter()

    def res(ds):
        return (height // ds) * (width // ds)

    def resblock(cin, cout, ds):
        hw = res(ds)
        c.add("conv", _conv(cin, cout, 9, hw * n) + _conv(cout, cout, 9, hw * n))
        if cin != cout:
            c.add("conv", _conv(cin, cout, 1, hw * n))
        c.add("linear", _linear(emb, cout, n))
        # time_stack: 3-D ResBlock with (kt, 1, 1) kernels
        c.add("conv", 2 * _conv(cout, cout, kt, hw * n))
        c.add("linear", _linear(emb, cout, n))

    def geglu_ff(dim_in, dim_out, rows):
        inner = 4 * dim_in
        c.add("linear", _linear(dim_in, 2 * inner, rows) + _linear(inner, dim_out, rows))

    def transformer(ch, ds, d):
        hw = res(ds)
        tokens = n * hw
        inner = ch if head_ch == -1 else (ch // head_ch) * head_ch
        c.add("linear", _linear(ch, inner, tokens) + _linear(inner, ch, tokens))  # proj_in / proj_out
        c.add("linear", _linear(ch, 4 * ch, n) + _linear(4 * ch, ch, n))  # time_pos_embed
        for _ in range(d):
            # spatial block: self-attention, cross-attention on one context token, GEGLU MLP
            c.add("linear", 4 * _linear(inner, inner, tokens))
            c.add("spatial_attention", _attention(hw, hw, inner, n))
            c.add("linear", 2 * _linear(inner, inner, tokens) + 2 * _linear(ctx_dim, inner, n))
            c.add("other_attention", _attention(hw, 1, inner, n))
            geglu_ff(inner, inner, tokens)
            # temporal block over `frames` tokens per pixel; its cross-attention context is the
            # first frame's context, one token per pixel sequence
            sequences = batch * hw
            if ff_in:
                geglu_ff(inner, inner, tokens)
            c.add("linear", 4 * _linear(inner, inner, tokens))
            c.add("other_attention", _attention(frames, frames, inner, sequences))
            c.add("linear", 2 * _linear(inner, inner, tokens) + 2 * _linear(ctx_dim, inner, sequences))
            c.add("other_attention", _attention(frames, 1, inner, sequences))
            geglu_ff(inner, inner, tokens)

    c.add("linear", _linear(mc, emb, n) + _linear(emb, emb, n))  # time_embed
    if params.get("num_classes") == "sequential":
        c.add("linear", _linear(params["adm_in_channels"], emb, n) + _linear(emb, emb, n))
    c.add("conv", _conv(params["in_channels"], mc, 9, res(1) * n))
    chans = [mc]
    ch, ds = mc, 1
    for level, m in enumerate(mult):
        for _ in range(nrb):
            resblock(ch, m * mc, ds)
            ch = m * mc
            if ds in attn_res:
                transformer(ch, ds, depths[level])
            chans.append(ch)
        if level != len(mult) - 1:
            ds *= 2
            c.add("conv", _conv(ch, ch, 9, res(ds) * n))  # stride-2 downsample
            chans.append(ch)
    resblock(ch, ch, ds)
    transformer(ch, ds, depth_mid)
    resblock(ch, ch, ds)
    for level, m in list(enumerate(mult))[::-1]:
        for i in range(nrb + 1):
            skip = chans.pop()
            resblock(ch + skip, m * mc, ds)
            ch = m * mc
            if ds in attn_res:
                transformer(ch, ds, depths[level])
            if level and i == nrb:
                ds //= 2
                c.add("conv", _conv(ch, ch, 9, res(ds) * n))  # upsample conv at the finer level
    c.add("conv", _conv(mc, params["out_channels"], 9, res(1) * n))
    out = dict(c.parts)
    out["total"] = c.total
    return out
