"""svd_ms.lora.names: LoRA tensor names as people publish them -> this UNet's modules, and back.

The other direction is checked against diffusers itself: every name `to_diffusers` gives is a
module of the UNet diffusers builds in the same (tiny) structure.
"""
import pytest
from lora_reference import diffusers_unet, fresh_unet

from svd_ms.lora.layers import target_layers
from svd_ms.lora.names import UNetNames, kohya_module, split_key

Q = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"


@pytest.mark.parametrize("key, expected", [
    (f"unet.{Q}.lora_A.weight", (Q, "down")),                              # PEFT / diffusers
    (f"unet.{Q}.lora_B.default.weight", (Q, "up")),                        # PEFT with an adapter name
    (f"base_model.model.{Q}.lora_A.weight", (Q, "down")),
    (f"unet.{Q}.lora.up.weight", (Q, "up")),                                # diffusers' older naming
    ("unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.processor.to_out_lora.down.weight",
     ("down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0", "down")),
    ("lora_unet_" + Q.replace(".", "_") + ".lora_down.weight", (Q, "down")),  # kohya
    ("lora_unet_" + Q.replace(".", "_") + ".alpha", (Q, "alpha")),
    ("model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_k.lora_B.weight",
     ("input_blocks.1.1.transformer_blocks.0.attn1.to_k", "up")),          # sgm layout
    ("unet.conv_in.weight", None),                                          # not a LoRA tensor
])
def test_split_key(key, expected):
    assert split_key(key) == expected


def test_kohya_keeps_words_with_underscores():
    flat = "down_blocks_1_attentions_0_temporal_transformer_blocks_0_ff_in_net_2"
    assert kohya_module(flat) == "down_blocks.1.attentions.0.temporal_transformer_blocks.0.ff_in.net.2"
    assert kohya_module("input_blocks_4_1_time_stack_0_attn2_to_out_0") == "input_blocks.4.1.time_stack.0.attn2.to_out.0"


def test_every_adapted_module_has_a_diffusers_name_that_diffusers_has(setup):
    unet = fresh_unet(setup)
    names = UNetNames(dict(unet.parameters_and_names()))
    assert names.per_level == 2
    diffusers_modules = {n for n, _ in diffusers_unet().named_modules()}
    modules = list(target_layers(unet, ["attn", "ff"]))
    translated = {m: names.to_diffusers(m) for m in modules}
    assert None not in translated.values()
    assert set(translated.values()) <= diffusers_modules, sorted(set(translated.values()) - diffusers_modules)[:3]
    assert all(names.to_ours(d) == m for m, d in translated.items())       # and back
    assert all(names.to_ours(m) == m for m in modules)                     # sgm names pass as they are
    assert any(".temporal_transformer_blocks." in d for d in translated.values())


def test_names_this_unet_lacks_are_none(setup):
    names = UNetNames(dict(fresh_unet(setup).parameters_and_names()))
    assert names.to_ours("down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_z") is None
    assert names.to_ours("input_blocks.99.1.transformer_blocks.0.attn1.to_q") is None
    assert names.to_diffusers("input_blocks.0.0") is None  # conv_in is no transformer module
