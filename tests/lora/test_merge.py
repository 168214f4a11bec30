"""svd_ms.lora.merge: LoRA files merged into the weights at load, and adapters saved as files,
checked against PEFT on diffusers' UNetSpatioTemporalConditionModel in float32 on CPU:
- merged into the weights, a PEFT-written file gives PEFT's output; scale 0 leaves the weights bit-identical;
- the same adapter named the kohya way, the `lora.down/up` way or the attention-processor way
  merges to the same weights; an adapter this project writes loads into PEFT and gives our output;
- a file that does not fit is refused with one line naming the first mismatch, nothing merged.
"""
import copy
import json

import numpy as np
import pytest
import torch
from conftest import assert_close
from lora_reference import (
    ALPHA,
    RANK,
    fresh_unet,
    inputs,
    our_call,
    snapshot,
    torch_forward,
)
from safetensors.numpy import save_file

from svd_ms.errors import LoRAError, SVDError
from svd_ms.lora.layers import LoRASettings, attach_adapters, set_adapter_weights
from svd_ms.lora.merge import merge_lora, parse_lora_spec, save_adapters


def test_merged_file_matches_peft_and_scale_zero_is_exact(setup):
    x, c_noise, ctx, ids, _ = inputs()
    with torch.no_grad():
        want = torch_forward(setup["peft_t"], x, c_noise, ctx, ids).numpy()
        base_out = torch_forward(setup["base_t"], x, c_noise, ctx, ids).numpy()
    unet = fresh_unet(setup)
    records = merge_lora(unet, [(setup["peft_file"], 1.0)])
    assert records == [{"path": setup["peft_file"], "scale": 1.0, "modules": 256}]
    out = our_call(unet, setup["y"])().asnumpy()
    change = float(np.abs(want - base_out).max() / np.abs(base_out).max())
    print(f"[lora] the adapter changes the UNet output by {change:.2f} relative (so the match below means something)")
    assert change > 0.05
    assert_close("UNet with the PEFT-written LoRA merged vs PEFT (unmerged)", out, want, rel=1e-4)

    zero = fresh_unet(setup)
    merge_lora(zero, f"{setup['peft_file']}:0")
    after = snapshot(zero)
    assert all(np.array_equal(after[n], setup["base_values"][n]) for n in after)


def _renamed(state, rename):
    out = {}
    for key, value in state.items():
        module, role = key[len("unet."):].split(".lora_")
        out.update(rename(module, "down" if role.startswith("A") else "up", value))
    return out


def test_other_namings_merge_to_the_same_weights(setup):
    reference = fresh_unet(setup)
    merge_lora(reference, setup["peft_file"])
    want = snapshot(reference)
    alpha = np.array(ALPHA, np.float32)

    def kohya(module, role, value):
        flat = "lora_unet_" + module.replace(".", "_")
        return {f"{flat}.lora_{role}.weight": value, f"{flat}.alpha": alpha}

    def lora_down_up(module, role, value):
        return {f"unet.{module}.lora.{role}.weight": value}

    def processor(module, role, value):
        attn, proj = module.rsplit(".to_", 1)
        proj = "to_" + proj.replace("out.0", "out")
        return {f"unet.{attn}.processor.{proj}_lora.{role}.weight": value}

    meta = {"alpha": str(ALPHA)}
    for label, rename, metadata in (("kohya lora_unet_*", kohya, None), ("diffusers lora.down/up", lora_down_up, meta),
                                    ("diffusers attention processor", processor, meta)):
        path = str(setup["folder"] / f"{rename.__name__}.safetensors")
        save_file(_renamed(setup["state"], rename), path, metadata=metadata)
        unet = fresh_unet(setup)
        merge_lora(unet, path)
        got = snapshot(unet)
        differ = [n for n in want if not np.array_equal(got[n], want[n])]
        print(f"[lora] {label}: {len(got) - len(differ)}/{len(got)} weights equal to the PEFT-named file's merge")
        assert not differ, differ[:3]


def test_our_adapter_file_loads_in_peft(setup):
    from peft import LoraConfig, inject_adapter_in_model, set_peft_model_state_dict
    from safetensors import safe_open

    unet = fresh_unet(setup)
    settings = LoRASettings(RANK, ALPHA, 0.0, ("attn",))
    adapters = attach_adapters(unet, settings, seed=5)
    rng = np.random.default_rng(3)
    for a in adapters.values():  # values of our own, unlike the PEFT file's
        set_adapter_weights(a, rng.standard_normal(a.down.shape) / np.sqrt(a.down.shape[1]),
                            0.5 * rng.standard_normal(a.up.shape) / np.sqrt(RANK))
    want = our_call(unet, setup["y"])().asnumpy()
    path = str(setup["folder"] / "ours.safetensors")
    save_adapters(path, adapters, unet, settings, base_model="tiny")

    with safe_open(path, framework="pt") as f:
        meta = f.metadata()
        state = {k[len("unet."):]: f.get_tensor(k) for k in f.keys()}
    assert all(k.endswith((".lora_A.weight", ".lora_B.weight")) for k in state) and len(state) == 2 * len(adapters)
    assert (int(meta["rank"]), float(meta["alpha"]), json.loads(meta["targets"]), meta["base_model"]) == \
        (RANK, ALPHA, ["attn"], "tiny")
    peft_t = copy.deepcopy(setup["base_t"])
    inject_adapter_in_model(LoraConfig(r=int(meta["rank"]), lora_alpha=float(meta["alpha"]),
                                       target_modules=json.loads(meta["target_modules"])), peft_t)
    result = set_peft_model_state_dict(peft_t, state)
    assert not result.unexpected_keys and not [k for k in result.missing_keys if "lora_" in k]
    x, c_noise, ctx, ids, _ = inputs()
    with torch.no_grad():
        got = torch_forward(peft_t, x, c_noise, ctx, ids).numpy()
    assert_close("PEFT with the adapter file written here vs our UNet with the adapters", got, want, rel=1e-4)


def test_mismatched_files_are_refused_in_one_line(setup, tmp_path):
    state = setup["state"]
    keys = list(state)
    bad_shape = dict(state)
    bad_shape[keys[10]] = np.zeros((RANK, state[keys[10]].shape[1] + 1), np.float32)
    partner = keys[10].replace("lora_A", "lora_B")
    bad_shape[partner] = state[partner]
    unknown = {"unet.down_blocks.7.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight": state[keys[0]],
               **state}
    missing_up = {k: v for k, v in state.items() if k != keys[1]}
    not_lora = {**state, "unet.conv_in.weight": np.zeros((32, 8, 3, 3), np.float32)}
    cases = [("shape", bad_shape, keys[10]),
             ("unknown module", unknown, "down_blocks.7.attentions.0"),
             ("missing up", missing_up, keys[0]),
             ("not a LoRA tensor", not_lora, "unet.conv_in.weight")]
    for label, tensors, needle in cases:
        path = str(tmp_path / f"{label.replace(' ', '_')}.safetensors")
        save_file(tensors, path)
        unet = fresh_unet(setup)
        with pytest.raises(LoRAError) as err:
            merge_lora(unet, [setup["peft_file"], path])  # a good file first: nothing may be merged
        message = str(err.value)
        print(f"[lora] refused ({label}): {message}")
        assert "\n" not in message and needle in message and path in message
        after = snapshot(unet)
        assert all(np.array_equal(after[n], setup["base_values"][n]) for n in after)
    pickle = tmp_path / "adapter.ckpt"
    pickle.write_bytes(b"\x80\x04not read")
    for path in (str(pickle), str(tmp_path / "absent.safetensors")):
        with pytest.raises(SVDError) as err:
            merge_lora(fresh_unet(setup), path)
        assert path in str(err.value) and "\n" not in str(err.value)


def test_lora_spec():
    assert parse_lora_spec("a/b.safetensors") == ("a/b.safetensors", 1.0)
    assert parse_lora_spec("a/b.safetensors:0.8") == ("a/b.safetensors", 0.8)
    assert parse_lora_spec("C:/x/b.safetensors") == ("C:/x/b.safetensors", 1.0)
