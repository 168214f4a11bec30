"""svd_ms.diffusers_map: diffusers' SVD tensor names -> the upstream (sgm) checkpoint layout.

Expected names come from upstream, never from this module: the full-size upstream manifest
(shared/reference/manifest/svd.keys.json) and the tiny upstream checkpoint
(tiny_svd.safetensors), against a UNet that diffusers itself builds. The whole-folder conversion
through svd_tools/convert.py is tested in tests/svd_tools/test_convert_diffusers.py.
"""
import json
import os

import numpy as np
import pytest
from conftest import REFERENCE, TINY_WEIGHTS
from safetensors import safe_open

from svd_ms import diffusers_map as dm

FULL_UP_ATTN = {0: False, 1: True, 2: True, 3: True}  # SVD: the first up block has no attention


@pytest.fixture(scope="module")
def manifest():
    with open(os.path.join(REFERENCE, "manifest", "svd.keys.json")) as f:
        return json.load(f)


@pytest.mark.parametrize("diffusers, upstream", [
    ("conv_in.weight", "input_blocks.0.0.weight"),
    ("time_embedding.linear_1.weight", "time_embed.0.weight"),
    ("add_embedding.linear_2.bias", "label_emb.0.2.bias"),
    ("down_blocks.0.resnets.0.spatial_res_block.conv1.weight", "input_blocks.1.0.in_layers.2.weight"),
    ("down_blocks.0.resnets.0.temporal_res_block.conv1.weight", "input_blocks.1.0.time_stack.in_layers.2.weight"),
    ("down_blocks.0.resnets.0.time_mixer.mix_factor", "input_blocks.1.0.time_mixer.mix_factor"),
    ("down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight",
     "input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight"),
    ("down_blocks.0.attentions.0.temporal_transformer_blocks.0.attn1.to_q.weight",
     "input_blocks.1.1.time_stack.0.attn1.to_q.weight"),
    ("down_blocks.0.attentions.0.time_mixer.mix_factor", "input_blocks.1.1.time_mixer.mix_factor"),
    ("down_blocks.0.downsamplers.0.conv.weight", "input_blocks.3.0.op.weight"),
    ("down_blocks.3.resnets.1.spatial_res_block.conv2.weight", "input_blocks.11.0.out_layers.3.weight"),
    ("mid_block.resnets.0.spatial_res_block.conv1.weight", "middle_block.0.in_layers.2.weight"),
    ("mid_block.attentions.0.norm.weight", "middle_block.1.norm.weight"),
    ("up_blocks.0.upsamplers.0.conv.weight", "output_blocks.2.1.conv.weight"),  # no attention at this level
    ("up_blocks.1.upsamplers.0.conv.weight", "output_blocks.5.2.conv.weight"),  # after the attention
    ("up_blocks.3.attentions.2.proj_out.weight", "output_blocks.11.1.proj_out.weight"),
])
def test_unet_names_are_upstreams(diffusers, upstream, manifest):
    assert f"model.diffusion_model.{upstream}" in manifest  # the expectation itself is an upstream name
    assert dm.unet_name(diffusers, 2, FULL_UP_ATTN) == upstream


def test_names_outside_the_layout_map_to_nothing():
    assert dm.unet_name("not_a_block.weight", 2, FULL_UP_ATTN) is None
    assert dm.unet_name("down_blocks.0.resnets.0.spatial_res_block.unknown.weight", 2, FULL_UP_ATTN) is None
    assert dm.unet_name("conv_in.scale", 2, FULL_UP_ATTN) is None


def test_layout_is_read_from_the_names():
    keys = ["down_blocks.0.resnets.1.spatial_res_block.conv1.weight", "up_blocks.0.resnets.2.conv1.weight",
            "up_blocks.1.attentions.0.norm.weight"]
    assert dm.unet_layout(keys) == (2, {0: False, 1: True})


def test_vae_and_clip_names(manifest):
    decoder, op = dm.vae_decoder_name("up_blocks.0.resnets.0.conv1.weight", 4)
    assert (decoder, op) == ("up.3.block.0.conv1.weight", "copy")  # diffusers counts up blocks the other way
    assert f"first_stage_model.decoder.{decoder}" in manifest
    encoder, op = dm.vae_encoder_name("mid_block.attentions.0.to_q.weight")
    assert (encoder, op) == ("mid.attn_1.q.weight", "conv1x1")  # a linear in diffusers, a 1x1 conv upstream
    assert f"first_stage_model.encoder.{encoder}" in manifest
    assert dm.clip_name("vision_model.post_layernorm.weight") == "ln_post.weight"
    assert dm.clip_name("vision_model.embeddings.class_embedding") == "class_embedding"


def test_tiny_diffusers_unet_covers_the_upstream_checkpoint_exactly():
    """Every tensor of a UNet diffusers builds in the tiny structure lands on one tensor of the tiny
    upstream checkpoint with that tensor's shape, and every upstream UNet tensor is reached."""
    from lora_reference import diffusers_unet

    state = {k: tuple(v.shape) for k, v in diffusers_unet().state_dict().items()}
    with safe_open(TINY_WEIGHTS, framework="np") as f:
        upstream = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys() if k.startswith("model.diffusion_model.")}
    rules, ignored, unknown = dm.plan({"unet": list(state)}, clip_index=0, vae_index=None)
    assert not unknown and not ignored, unknown[:3]
    produced = {}
    for rule in rules:
        (target,) = rule.upstream
        produced[target] = dm.output_shape(rule.op, [state[s.split("/", 1)[1]] for s in rule.sources])
    assert set(produced) == set(upstream), sorted(set(produced) ^ set(upstream))[:5]
    wrong = [k for k in upstream if produced[k] != upstream[k]]
    assert not wrong, [(k, produced[k], upstream[k]) for k in wrong[:3]]


def test_plan_reports_ignored_and_unknown_names_and_feeds_both_encoders():
    keys = {
        "unet": ["conv_in.weight", "mystery.weight"],
        "vae": ["encoder.conv_in.weight", "quant_conv.weight", "decoder.conv_out.weight", "odd.weight"],
        "image_encoder": ["vision_model.embeddings.position_ids", "visual_projection.weight",
                          "vision_model.encoder.layers.0.self_attn.q_proj.weight",
                          "vision_model.encoder.layers.0.self_attn.k_proj.weight",
                          "vision_model.encoder.layers.0.self_attn.v_proj.weight",
                          "vision_model.encoder.layers.1.self_attn.q_proj.bias"],
    }
    rules, ignored, unknown = dm.plan(keys, clip_index=0, vae_index=3)
    by_source = {r.sources: r for r in rules}
    assert list(ignored) == ["image_encoder/vision_model.embeddings.position_ids"]
    # an incomplete q/k/v triple cannot be merged: reported, not guessed
    assert sorted(unknown) == ["image_encoder/vision_model.encoder.layers.1.self_attn.q_proj.bias",
                               "unet/mystery.weight", "vae/odd.weight"]
    # one diffusers encoder feeds the first stage and the conditioner's image-latent embedder
    assert by_source[("vae/encoder.conv_in.weight",)].upstream == (
        "first_stage_model.encoder.conv_in.weight", "conditioner.embedders.3.encoder.encoder.conv_in.weight")
    assert "conditioner.embedders.3.encoder.quant_conv.weight" in by_source[("vae/quant_conv.weight",)].upstream
    assert by_source[("image_encoder/visual_projection.weight",)].op == "transpose"
    qkv = [r for r in rules if r.op == "qkv"]
    assert len(qkv) == 1 and qkv[0].upstream == (
        "conditioner.embedders.0.open_clip.model.visual.transformer.resblocks.0.attn.in_proj_weight",)
    assert [s.rsplit(".", 2)[-2] for s in qkv[0].sources] == ["q_proj", "k_proj", "v_proj"]


def test_ops_combine_tensors_as_upstream_stores_them():
    q, k, v = (np.full((2, 3), i, np.float32) for i in (1, 2, 3))
    assert dm.apply("qkv", [q, k, v])[:, 0].tolist() == [1, 1, 2, 2, 3, 3]  # q, k, v order
    assert dm.output_shape("qkv", [(2, 3)] * 3) == (6, 3)
    assert dm.output_shape("qkv", [(2, 3), (2, 4), (2, 3)]) is None
    w = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert np.array_equal(dm.apply("transpose", [w]), w.T) and dm.output_shape("transpose", [(2, 3)]) == (3, 2)
    assert dm.apply("conv1x1", [w]).shape == (2, 3, 1, 1) and dm.output_shape("conv1x1", [(2, 3)]) == (2, 3, 1, 1)
    assert dm.apply("copy", [w]) is w
    with pytest.raises(ValueError):
        dm.apply("rotate", [w])
