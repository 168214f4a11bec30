"""The image autoencoder's encoder and decoder (sgm.modules.diffusionmodules.model).

Every decoder block takes `(h, temb, timesteps)` so that the video decoder can reuse this
layout; the image blocks ignore `timesteps`.
"""
from mindspore import nn, ops

from ..attention import cpu_attention_kernel, scaled_dot_product_attention
from ..layers import Conv2d, GroupNorm, Identity, Linear, nearest_upsample
from ... import policy


def Normalize(in_channels: int, num_groups: int = 32) -> GroupNorm:
    return GroupNorm(num_groups, in_channels, eps=1e-6)


def nonlinearity(x):
    return ops.silu(x)


class Upsample(nn.Cell):
    def __init__(self, in_channels, with_conv):
        super().__init__()
        self.conv = Conv2d(in_channels, in_channels, 3, padding=1) if with_conv else None

    def construct(self, x):
        x = nearest_upsample(x, 2)
        if self.conv is not None:
            x = self.conv(x)
        return x


class Downsample(nn.Cell):
    def __init__(self, in_channels, with_conv):
        super().__init__()
        self.conv = Conv2d(in_channels, in_channels, 3, stride=2, padding=0) if with_conv else None

    def construct(self, x):
        if self.conv is not None:
            # Asymmetric padding: one extra row and column at the bottom/right.
            return self.conv.conv2d(x, extra_pad=(0, 1, 0, 1))
        n, c, h, w = x.shape
        return x.reshape(n, c, h // 2, 2, w // 2, 2).mean(axis=(3, 5))


class ResnetBlock(nn.Cell):
    def __init__(self, *, in_channels, out_channels=None, conv_shortcut=False, dropout=0.0, temb_channels=512):
        super().__init__()
        out_channels = in_channels if out_channels is None else out_channels
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.norm1 = Normalize(in_channels)
        self.conv1 = Conv2d(in_channels, out_channels, 3, padding=1)
        self.temb_proj = Linear(temb_channels, out_channels) if temb_channels > 0 else None
        self.norm2 = Normalize(out_channels)
        self.conv2 = Conv2d(out_channels, out_channels, 3, padding=1)
        self.conv_shortcut = None
        self.nin_shortcut = None
        if in_channels != out_channels:
            if conv_shortcut:
                self.conv_shortcut = Conv2d(in_channels, out_channels, 3, padding=1)
            else:
                self.nin_shortcut = Conv2d(in_channels, out_channels, 1)

    def construct(self, x, temb=None, timesteps=None):
        return self.residual(x, temb)

    def residual(self, x, temb):
        h = self.conv1(self.norm1.then_silu(x))
        if temb is not None and self.temb_proj is not None:
            h = h + self.temb_proj(nonlinearity(temb))[:, :, None, None]
        h = self.conv2(self.norm2.then_silu(h))
        if self.conv_shortcut is not None:
            x = self.conv_shortcut(x)
        elif self.nin_shortcut is not None:
            x = self.nin_shortcut(x)
        return x + h


class AttnBlock(nn.Cell):
    """Single-head self-attention over the pixels of a feature map."""

    def __init__(self, in_channels, attention: str = "auto"):
        super().__init__()
        self.in_channels = in_channels
        self.norm = Normalize(in_channels)
        self.q = Conv2d(in_channels, in_channels, 1)
        self.k = Conv2d(in_channels, in_channels, 1)
        self.v = Conv2d(in_channels, in_channels, 1)
        self.proj_out = Conv2d(in_channels, in_channels, 1)
        self.implementation = policy.attention_implementation(attention)
        self.kernel, self.kernel_settings = cpu_attention_kernel(1, in_channels, self.implementation)

    def attention(self, x):
        h = self.norm(x)
        b, c, hh, ww = h.shape
        q, k, v = (t.reshape(b, c, hh * ww).swapaxes(1, 2) for t in (self.q(h), self.k(h), self.v(h)))
        kernel = None if self.training else self.kernel
        out = scaled_dot_product_attention(q, k, v, 1, self.implementation, kernel, self.kernel_settings)
        return out.swapaxes(1, 2).reshape(b, c, hh, ww)

    def construct(self, x, timesteps=None):
        return x + self.proj_out(self.attention(x))


def make_attn(in_channels, attn_type="vanilla", attn_kwargs=None):
    if attn_type in ("vanilla", "vanilla-xformers"):
        return AttnBlock(in_channels)
    if attn_type == "none":
        return _IdentityAttn()
    raise ValueError(f"attn_type '{attn_type}' is not supported")


class _IdentityAttn(Identity):
    def construct(self, x, timesteps=None):
        return x


class Encoder(nn.Cell):
    def __init__(self, *, ch, out_ch, ch_mult=(1, 2, 4, 8), num_res_blocks, attn_resolutions, dropout=0.0,
                 resamp_with_conv=True, in_channels, resolution, z_channels, double_z=True, use_linear_attn=False,
                 attn_type="vanilla", **ignore_kwargs):
        super().__init__()
        if use_linear_attn:
            raise ValueError("linear attention in the autoencoder is not supported")
        self.num_resolutions = len(ch_mult)
        self.num_res_blocks = num_res_blocks
        self.conv_in = Conv2d(in_channels, ch, 3, padding=1)
        curr_res = resolution
        in_ch_mult = (1,) + tuple(ch_mult)
        down = []
        block_in = ch
        for i_level in range(self.num_resolutions):
            level = nn.Cell()
            blocks, attns = [], []
            block_in = ch * in_ch_mult[i_level]
            block_out = ch * ch_mult[i_level]
            for _ in range(num_res_blocks):
                blocks.append(ResnetBlock(in_channels=block_in, out_channels=block_out, temb_channels=0,
                                          dropout=dropout))
                block_in = block_out
                if curr_res in attn_resolutions:
                    attns.append(make_attn(block_in, attn_type))
            level.block = nn.CellList(blocks)
            level.attn = nn.CellList(attns)
            if i_level != self.num_resolutions - 1:
                level.downsample = Downsample(block_in, resamp_with_conv)
                curr_res //= 2
            down.append(level)
        self.down = nn.CellList(down)
        self.mid = nn.Cell()
        self.mid.block_1 = ResnetBlock(in_channels=block_in, out_channels=block_in, temb_channels=0, dropout=dropout)
        self.mid.attn_1 = make_attn(block_in, attn_type)
        self.mid.block_2 = ResnetBlock(in_channels=block_in, out_channels=block_in, temb_channels=0, dropout=dropout)
        self.norm_out = Normalize(block_in)
        self.conv_out = Conv2d(block_in, 2 * z_channels if double_z else z_channels, 3, padding=1)

    def construct(self, x):
        h = self.conv_in(x)
        for i_level in range(self.num_resolutions):
            level = self.down[i_level]
            for i_block in range(self.num_res_blocks):
                h = level.block[i_block](h)
                if len(level.attn) > 0:
                    h = level.attn[i_block](h)
            if i_level != self.num_resolutions - 1:
                h = level.downsample(h)
        h = self.mid.block_1(h)
        h = self.mid.attn_1(h)
        h = self.mid.block_2(h)
        return self.conv_out(self.norm_out.then_silu(h))


class Decoder(nn.Cell):
    """Latents to pixels. Subclasses swap the block types through the `_make_*` factories."""

    # Whether `conv_out` takes the clip length (the video decoder's 3-D output convolution).
    conv_out_takes_timesteps = False

    def __init__(self, *, ch, out_ch, ch_mult=(1, 2, 4, 8), num_res_blocks, attn_resolutions, dropout=0.0,
                 resamp_with_conv=True, in_channels, resolution, z_channels, give_pre_end=False, tanh_out=False,
                 use_linear_attn=False, attn_type="vanilla", **ignorekwargs):
        super().__init__()
        if use_linear_attn:
            raise ValueError("linear attention in the autoencoder is not supported")
        self.num_resolutions = len(ch_mult)
        self.num_res_blocks = num_res_blocks
        self.give_pre_end = give_pre_end
        self.tanh_out = tanh_out
        block_in = ch * ch_mult[self.num_resolutions - 1]
        curr_res = resolution // 2 ** (self.num_resolutions - 1)
        make_attn_cls = self._make_attn()
        make_resblock_cls = self._make_resblock()
        make_conv_cls = self._make_conv()

        self.conv_in = Conv2d(z_channels, block_in, 3, padding=1)
        self.mid = nn.Cell()
        self.mid.block_1 = make_resblock_cls(in_channels=block_in, out_channels=block_in, temb_channels=0,
                                             dropout=dropout)
        self.mid.attn_1 = make_attn_cls(block_in, attn_type=attn_type)
        self.mid.block_2 = make_resblock_cls(in_channels=block_in, out_channels=block_in, temb_channels=0,
                                             dropout=dropout)
        up = []
        for i_level in reversed(range(self.num_resolutions)):
            level = nn.Cell()
            blocks, attns = [], []
            block_out = ch * ch_mult[i_level]
            for _ in range(num_res_blocks + 1):
                blocks.append(make_resblock_cls(in_channels=block_in, out_channels=block_out, temb_channels=0,
                                                dropout=dropout))
                block_in = block_out
                if curr_res in attn_resolutions:
                    attns.append(make_attn_cls(block_in, attn_type=attn_type))
            level.block = nn.CellList(blocks)
            level.attn = nn.CellList(attns)
            if i_level != 0:
                level.upsample = Upsample(block_in, resamp_with_conv)
                curr_res *= 2
            up.insert(0, level)
        self.up = nn.CellList(up)
        self.norm_out = Normalize(block_in)
        self.conv_out = make_conv_cls(block_in, out_ch, kernel_size=3, stride=1, padding=1)

    def _make_attn(self):
        return make_attn

    def _make_resblock(self):
        return ResnetBlock

    def _make_conv(self):
        return Conv2d

    def construct(self, z, timesteps=None):
        h = self.conv_in(z)
        h = self.mid.block_1(h, None, timesteps)
        h = self.mid.attn_1(h, timesteps)
        h = self.mid.block_2(h, None, timesteps)
        # A counting-down range, not reversed(range(...)): MindSpore 2.10's graph compiler keeps a cell
        # whose construct calls reversed() alive after it is dropped (tests/modules/diffusionmodules/test_model.py).
        for i_level in range(self.num_resolutions - 1, -1, -1):
            level = self.up[i_level]
            for i_block in range(self.num_res_blocks + 1):
                h = level.block[i_block](h, None, timesteps)
                if len(level.attn) > 0:
                    h = level.attn[i_block](h, timesteps)
            if i_level != 0:
                h = level.upsample(h)
        if self.give_pre_end:
            return h
        h = self.norm_out.then_silu(h)
        if self.conv_out_takes_timesteps:
            h = self.conv_out(h, timesteps)
        else:
            h = self.conv_out(h)
        if self.tanh_out:
            h = ops.tanh(h)
        return h
