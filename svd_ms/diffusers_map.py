"""Names of a diffusers-format SVD folder, translated to the upstream (sgm) checkpoint layout.

Components: ``unet/`` (UNetSpatioTemporalConditionModel) -> ``model.diffusion_model.*``; ``vae/``
(AutoencoderKLTemporalDecoder) -> ``first_stage_model.*`` and the image-latent embedder's
``conditioner.embedders.<V>.encoder.*``; ``image_encoder/`` (CLIPVisionModelWithProjection) ->
``conditioner.embedders.<C>.open_clip.model.visual.*``. Most tensors are only renamed; the rest
carry an ``op``: ``qkv`` (transformers' separate q/k/v joined into OpenCLIP's ``in_proj``, in q, k,
v order), ``transpose`` (``visual_projection.weight`` is (embed, width), OpenCLIP's ``proj`` is
(width, embed)), ``conv1x1`` (the VAE mid-block attention: linear layers in diffusers, 1x1
convolutions upstream). One diffusers tensor may feed several upstream ones: diffusers' single VAE
encoder is both the first stage's and the conditioner embedder's (upstream stores two copies), and
its ``quant_conv`` exists upstream only in the embedder's encoder. Names only; no data is read.
"""
import re
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

COMPONENTS = ("unet", "vae", "image_encoder")

# Source tensors in diffusers folders that are not weights of the model.
DIFFUSERS_IGNORED = {
    r"^image_encoder/vision_model\.embeddings\.position_ids$": "CLIP position index buffer (not a weight)",
}


@dataclass(frozen=True)
class Rule:
    """One upstream tensor built from one or more diffusers tensors."""

    upstream: Tuple[str, ...]  # candidate upstream names; every wanted one receives the tensor
    sources: Tuple[str, ...]  # component-prefixed diffusers names, e.g. "unet/conv_in.weight"
    op: str = "copy"  # copy | qkv | transpose | conv1x1


# ----------------------------------------------------------------------------- UNet

_UNET_FIXED = {
    "conv_in": "input_blocks.0.0",
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "add_embedding.linear_1": "label_emb.0.0",
    "add_embedding.linear_2": "label_emb.0.2",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}

_RESBLOCK = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}


def _unet_resblock(rest: str) -> Optional[str]:
    if rest == "time_mixer.mix_factor":
        return rest
    m = re.fullmatch(r"(spatial_res_block|temporal_res_block)\.(\w+)\.(weight|bias)", rest)
    if not m or m.group(2) not in _RESBLOCK:
        return None
    inner = _RESBLOCK[m.group(2)] + "." + m.group(3)
    return inner if m.group(1) == "spatial_res_block" else "time_stack." + inner


def _unet_transformer(rest: str) -> Optional[str]:
    m = re.fullmatch(r"time_pos_embed\.linear_([12])\.(weight|bias)", rest)
    if m:
        return f"time_pos_embed.{0 if m.group(1) == '1' else 2}.{m.group(2)}"
    m = re.fullmatch(r"temporal_transformer_blocks\.(\d+)\.(.+)", rest)
    if m:
        return f"time_stack.{m.group(1)}.{m.group(2)}"
    if re.fullmatch(r"(norm|proj_in|proj_out)\.(weight|bias)|transformer_blocks\.\d+\..+|time_mixer\.mix_factor", rest):
        return rest
    return None


def unet_layout(keys: Iterable[str]) -> Tuple[int, Dict[int, bool]]:
    """(resnets per down block, {up block index: has attentions}) from the UNet's names."""
    per_level = 0
    up_attn: Dict[int, bool] = {}
    for k in keys:
        m = re.match(r"down_blocks\.\d+\.resnets\.(\d+)\.", k)
        if m:
            per_level = max(per_level, int(m.group(1)) + 1)
        m = re.match(r"up_blocks\.(\d+)\.(attentions)?", k)
        if m:
            i = int(m.group(1))
            up_attn[i] = up_attn.get(i, False) or bool(m.group(2))
    return per_level, up_attn


def unet_name(key: str, per_level: int, up_attn: Dict[int, bool]) -> Optional[str]:
    """Upstream name (below ``model.diffusion_model.``) of a diffusers UNet tensor, or None."""
    module, _, param = key.rpartition(".")
    if module in _UNET_FIXED and param in ("weight", "bias"):
        return f"{_UNET_FIXED[module]}.{param}"
    stride = per_level + 1  # resnets + the downsampler / upsampler of one level
    m = re.fullmatch(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key)
    if m:
        i, kind, j, rest = int(m.group(1)), m.group(2), int(m.group(3)), m.group(4)
        inner = _unet_resblock(rest) if kind == "resnets" else _unet_transformer(rest)
        slot = 0 if kind == "resnets" else 1
        return None if inner is None else f"input_blocks.{1 + i * stride + j}.{slot}.{inner}"
    m = re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(weight|bias)", key)
    if m:
        return f"input_blocks.{(int(m.group(1)) + 1) * stride}.0.op.{m.group(2)}"
    m = re.fullmatch(r"mid_block\.(resnets|attentions)\.(\d+)\.(.+)", key)
    if m:
        kind, j, rest = m.group(1), int(m.group(2)), m.group(3)
        if kind == "resnets":
            inner, slot = _unet_resblock(rest), 2 * j
        else:
            inner, slot = _unet_transformer(rest), 1 + 2 * j
        return None if inner is None else f"middle_block.{slot}.{inner}"
    m = re.fullmatch(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key)
    if m:
        i, kind, j, rest = int(m.group(1)), m.group(2), int(m.group(3)), m.group(4)
        inner = _unet_resblock(rest) if kind == "resnets" else _unet_transformer(rest)
        slot = 0 if kind == "resnets" else 1
        return None if inner is None else f"output_blocks.{i * stride + j}.{slot}.{inner}"
    m = re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(weight|bias)", key)
    if m:
        i = int(m.group(1))
        slot = 2 if up_attn.get(i, False) else 1
        return f"output_blocks.{i * stride + per_level}.{slot}.conv.{m.group(2)}"
    return None


# ----------------------------------------------------------------------------- VAE

_VAE_ATTN = {
    "group_norm": "norm",
    "to_q": "q",
    "to_k": "k",
    "to_v": "v",
    "to_out.0": "proj_out",
    # names of older diffusers releases
    "query": "q",
    "key": "k",
    "value": "v",
    "proj_attn": "proj_out",
}

_VAE_TIME_STACK = {
    "norm1": "time_stack.in_layers.0",
    "conv1": "time_stack.in_layers.2",
    "norm2": "time_stack.out_layers.0",
    "conv2": "time_stack.out_layers.3",
}


def _vae_resblock(rest: str) -> Optional[str]:
    if rest == "time_mixer.mix_factor":
        return "mix_factor"
    m = re.fullmatch(r"(?:(spatial_res_block|temporal_res_block)\.)?(\w+)\.(weight|bias)", rest)
    if not m:
        return None
    kind, layer, param = m.groups()
    if kind == "temporal_res_block":
        return f"{_VAE_TIME_STACK[layer]}.{param}" if layer in _VAE_TIME_STACK else None
    if layer == "conv_shortcut":
        layer = "nin_shortcut"
    if layer not in ("norm1", "conv1", "norm2", "conv2", "nin_shortcut"):
        return None
    return f"{layer}.{param}"


def _vae_attention(rest: str) -> Tuple[Optional[str], str]:
    m = re.fullmatch(r"(group_norm|to_q|to_k|to_v|to_out\.0|query|key|value|proj_attn)\.(weight|bias)", rest)
    if not m:
        return None, "copy"
    op = "conv1x1" if m.group(2) == "weight" and m.group(1) != "group_norm" else "copy"
    return f"{_VAE_ATTN[m.group(1)]}.{m.group(2)}", op


def _vae_mid(rest: str) -> Tuple[Optional[str], str]:
    m = re.fullmatch(r"resnets\.(\d+)\.(.+)", rest)
    if m:
        inner = _vae_resblock(m.group(2))
        return (None if inner is None else f"mid.block_{int(m.group(1)) + 1}.{inner}"), "copy"
    m = re.fullmatch(r"attentions\.0\.(.+)", rest)
    if m:
        inner, op = _vae_attention(m.group(1))
        return (None if inner is None else f"mid.attn_1.{inner}"), op
    return None, "copy"


def vae_encoder_name(rest: str) -> Tuple[Optional[str], str]:
    """(upstream name below ``encoder.``, op) of a diffusers ``encoder.<rest>`` tensor."""
    if re.fullmatch(r"(conv_in|conv_out)\.(weight|bias)", rest):
        return rest, "copy"
    m = re.fullmatch(r"conv_norm_out\.(weight|bias)", rest)
    if m:
        return f"norm_out.{m.group(1)}", "copy"
    m = re.fullmatch(r"down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", rest)
    if m:
        inner = _vae_resblock(m.group(3))
        return (None if inner is None else f"down.{m.group(1)}.block.{m.group(2)}.{inner}"), "copy"
    m = re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(weight|bias)", rest)
    if m:
        return f"down.{m.group(1)}.downsample.conv.{m.group(2)}", "copy"
    m = re.fullmatch(r"mid_block\.(.+)", rest)
    if m:
        return _vae_mid(m.group(1))
    return None, "copy"


def vae_decoder_name(rest: str, n_up: int) -> Tuple[Optional[str], str]:
    """(upstream name below ``decoder.``, op) of a diffusers ``decoder.<rest>`` tensor.

    diffusers numbers decoder up blocks in the order they run (lowest resolution first),
    upstream by resolution level (``up.<n_up - 1>`` runs first).
    """
    if re.fullmatch(r"(conv_in|conv_out)\.(weight|bias)", rest):
        return rest, "copy"
    m = re.fullmatch(r"conv_norm_out\.(weight|bias)", rest)
    if m:
        return f"norm_out.{m.group(1)}", "copy"
    m = re.fullmatch(r"time_conv_out\.(weight|bias)", rest)
    if m:
        return f"conv_out.time_mix_conv.{m.group(1)}", "copy"
    m = re.fullmatch(r"up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", rest)
    if m:
        inner = _vae_resblock(m.group(3))
        level = n_up - 1 - int(m.group(1))
        return (None if inner is None else f"up.{level}.block.{m.group(2)}.{inner}"), "copy"
    m = re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(weight|bias)", rest)
    if m:
        return f"up.{n_up - 1 - int(m.group(1))}.upsample.conv.{m.group(2)}", "copy"
    m = re.fullmatch(r"mid_block\.(.+)", rest)
    if m:
        return _vae_mid(m.group(1))
    return None, "copy"


# ----------------------------------------------------------------------------- CLIP

_CLIP_LAYER = {
    "layer_norm1": "ln_1",
    "layer_norm2": "ln_2",
    "mlp.fc1": "mlp.c_fc",
    "mlp.fc2": "mlp.c_proj",
    "self_attn.out_proj": "attn.out_proj",
}


def clip_name(key: str) -> Optional[str]:
    """Upstream name (below ``open_clip.model.visual.``) of a single-source CLIP tensor."""
    fixed = {
        "vision_model.embeddings.class_embedding": "class_embedding",
        "vision_model.embeddings.patch_embedding.weight": "conv1.weight",
        "vision_model.embeddings.position_embedding.weight": "positional_embedding",
        "vision_model.pre_layrnorm.weight": "ln_pre.weight",
        "vision_model.pre_layrnorm.bias": "ln_pre.bias",
        "vision_model.post_layernorm.weight": "ln_post.weight",
        "vision_model.post_layernorm.bias": "ln_post.bias",
    }
    if key in fixed:
        return fixed[key]
    m = re.fullmatch(r"vision_model\.encoder\.layers\.(\d+)\.(.+)\.(weight|bias)", key)
    if m and m.group(2) in _CLIP_LAYER:
        return f"transformer.resblocks.{m.group(1)}.{_CLIP_LAYER[m.group(2)]}.{m.group(3)}"
    return None


# ----------------------------------------------------------------------------- all together


def plan(
    keys: Dict[str, Sequence[str]],
    clip_index: int,
    vae_index: Optional[int],
) -> Tuple[List[Rule], Dict[str, str], List[str]]:
    """Translate the tensor names of a diffusers folder.

    ``keys`` maps each component ("unet", "vae", "image_encoder") to its tensor names.
    ``clip_index`` / ``vae_index`` are the positions of the image embedder and of the
    image-latent embedder in the config's ``conditioner.emb_models``.

    Returns ``(rules, ignored, unknown)``: the rules producing upstream tensors, the diffusers
    names deliberately skipped with the reason, and the names nothing maps to (prefixed by
    component, e.g. ``"unet/foo.weight"``).
    """
    rules: List[Rule] = []
    ignored: Dict[str, str] = {}
    unknown: List[str] = []

    def skip(name: str) -> bool:
        for pattern, reason in DIFFUSERS_IGNORED.items():
            if re.search(pattern, name):
                ignored[name] = reason
                return True
        return False

    # UNet
    unet_keys = list(keys.get("unet", ()))
    per_level, up_attn = unet_layout(unet_keys)
    for k in unet_keys:
        src = f"unet/{k}"
        if skip(src):
            continue
        name = unet_name(k, per_level, up_attn)
        if name is None:
            unknown.append(src)
        else:
            rules.append(Rule((f"model.diffusion_model.{name}",), (src,)))

    # VAE
    vae_keys = list(keys.get("vae", ()))
    n_up = 1 + max((int(m.group(1)) for m in (re.match(r"decoder\.up_blocks\.(\d+)\.", k) for k in vae_keys) if m), default=-1)
    cond = f"conditioner.embedders.{vae_index}.encoder." if vae_index is not None else None
    for k in vae_keys:
        src = f"vae/{k}"
        if skip(src):
            continue
        targets: Tuple[str, ...] = ()
        op = "copy"
        if k.startswith("encoder."):
            inner, op = vae_encoder_name(k[len("encoder."):])
            if inner is not None:
                targets = (f"first_stage_model.encoder.{inner}",) + ((f"{cond}encoder.{inner}",) if cond else ())
        elif k.startswith("decoder."):
            inner, op = vae_decoder_name(k[len("decoder."):], n_up)
            if inner is not None:
                targets = (f"first_stage_model.decoder.{inner}",)
        else:
            m = re.fullmatch(r"(quant_conv|post_quant_conv)\.(weight|bias)", k)
            if m:
                first = f"first_stage_model.{k}"
                targets = ((f"{cond}{k}", first) if cond else (first,)) if m.group(1) == "quant_conv" else (
                    (first, f"{cond}{k}") if cond else (first,))
        if targets:
            rules.append(Rule(targets, (src,), op))
        else:
            unknown.append(src)

    # CLIP image tower
    prefix = f"conditioner.embedders.{clip_index}.open_clip.model.visual."
    clip_keys = list(keys.get("image_encoder", ()))
    qkv: Dict[Tuple[str, str], Dict[str, str]] = {}
    for k in clip_keys:
        src = f"image_encoder/{k}"
        if skip(src):
            continue
        m = re.fullmatch(r"vision_model\.encoder\.layers\.(\d+)\.self_attn\.([qkv])_proj\.(weight|bias)", k)
        if m:
            qkv.setdefault((m.group(1), m.group(3)), {})[m.group(2)] = src
            continue
        if k == "visual_projection.weight":
            rules.append(Rule((prefix + "proj",), (src,), "transpose"))
            continue
        name = clip_name(k)
        if name is None:
            unknown.append(src)
        else:
            rules.append(Rule((prefix + name,), (src,)))
    for (layer, param), parts in sorted(qkv.items(), key=lambda kv: (int(kv[0][0]), kv[0][1])):
        if set(parts) != {"q", "k", "v"}:
            unknown.extend(parts.values())  # an incomplete q/k/v triple cannot be merged
            continue
        target = f"{prefix}transformer.resblocks.{layer}.attn.in_proj_{param}"
        rules.append(Rule((target,), (parts["q"], parts["k"], parts["v"]), "qkv"))
    return rules, ignored, unknown


def output_shape(op: str, shapes: Sequence[Tuple[int, ...]]) -> Optional[Tuple[int, ...]]:
    """Shape of a rule's result from its sources' shapes; None when they cannot combine."""
    if op == "copy":
        return tuple(shapes[0])
    if op == "transpose":
        return tuple(shapes[0][::-1]) if len(shapes[0]) == 2 else None
    if op == "conv1x1":
        return tuple(shapes[0]) + (1, 1) if len(shapes[0]) == 2 else tuple(shapes[0])
    if op == "qkv":
        first = tuple(shapes[0])
        if not first or any(tuple(s)[1:] != first[1:] for s in shapes):
            return None
        return (sum(s[0] for s in shapes),) + first[1:]
    raise ValueError(op)


def apply(op: str, arrays: List) -> "object":
    """The rule's result from its sources' arrays (numpy)."""
    import numpy as np

    if op == "copy":
        return arrays[0]
    if op == "transpose":
        return np.ascontiguousarray(arrays[0].T)
    if op == "conv1x1":
        a = arrays[0]
        return a.reshape(a.shape + (1, 1)) if a.ndim == 2 else a
    if op == "qkv":
        return np.concatenate(arrays, axis=0)
    raise ValueError(op)
