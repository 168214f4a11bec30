"""LoRA (svd_ms/lora) against PEFT on diffusers' UNetSpatioTemporalConditionModel.

The tiny reference UNet's structure (tiny_svd.sgm.yaml) is built in diffusers with random base
weights, which reach this project's UNet through svd_tools' diffusers name map. PEFT puts LoRA
layers with random (nonzero) A and B on the attention projections of every spatial and temporal
transformer block; its state dict, written as diffusers writes LoRA files, is what this project
loads. Checked in float32 on CPU:
- with the adapters attached, the UNet output and the gradient of a loss with respect to every
  adapter tensor equal PEFT's (1e-4 relative);
- merged into the weights, the same file gives PEFT's output; scale 0 leaves the weights bit-identical;
- the same adapter named the kohya way, the `lora.down/up` way or the attention-processor way
  merges to the same weights; an adapter this project writes loads into PEFT and gives our output;
- a file that does not fit is refused with one line naming the first mismatch, nothing merged.
"""
import copy
import json

import mindspore as ms
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from safetensors.numpy import save_file

from conftest import TINY_CONFIG, assert_close
from svd_ms.errors import LoRAError, SVDError
from svd_ms.lora import (LoRASettings, UNetNames, attach_adapters, load_into_adapters, merge_lora, parse_lora_spec,
                         save_adapters, target_layers)
from svd_ms.lora.layers import set_adapter_weights
from svd_ms.util import instantiate_from_config
from svd_ms import diffusers_map as dm

RANK, ALPHA = 4, 8.0
B, T, H, W = 1, 3, 8, 8


def diffusers_unet():
    from diffusers import UNetSpatioTemporalConditionModel

    torch.manual_seed(0)
    unet = UNetSpatioTemporalConditionModel(
        in_channels=8, out_channels=4, layers_per_block=2, transformer_layers_per_block=1,
        block_out_channels=(32, 64, 128, 128), addition_time_embed_dim=16, projection_class_embeddings_input_dim=48,
        cross_attention_dim=32, num_attention_heads=(2, 4, 8, 8), num_frames=T)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in unet.named_parameters():
            if param.ndim >= 2:
                param.copy_(torch.randn(param.shape, generator=gen) / np.sqrt(param[0].numel()))
            elif "norm" in name and name.endswith("weight"):
                param.copy_(1 + 0.1 * torch.randn(param.shape, generator=gen))
            else:
                param.copy_(0.05 * torch.randn(param.shape, generator=gen))
    # diffusers' resnets normalise with eps 1e-6, upstream's (sgm, which this project follows)
    # with 1e-5: a model difference of ~3e-5 relative in the output that has nothing to do with
    # LoRA. The reference gets upstream's value.
    for name, module in unet.named_modules():
        if isinstance(module, torch.nn.GroupNorm) and ".resnets." in name:
            module.eps = 1e-5
    return unet.eval()


def our_unet(torch_unet):
    """This project's UNet of the tiny config with the diffusers UNet's weights (via the name map)."""
    unet = instantiate_from_config(OmegaConf.load(TINY_CONFIG).model.params.network_config)
    unet.set_train(False)
    state = {k: v.detach().numpy() for k, v in torch_unet.state_dict().items()}
    rules, _, unknown = dm.plan({"unet": list(state)}, clip_index=0, vae_index=None)
    assert not unknown, unknown[:3]
    params = dict(unet.parameters_and_names())
    filled = set()
    for rule in rules:
        value = dm.apply(rule.op, [state[s.split("/", 1)[1]] for s in rule.sources])
        name = rule.upstream[0][len("model.diffusion_model."):]
        params[name].set_data(ms.Tensor(np.ascontiguousarray(value, np.float32)))
        filled.add(name)
    assert filled == set(params), sorted(set(params) - filled)[:3]
    return unet


def snapshot(unet):
    return {n: p.asnumpy().copy() for n, p in unet.parameters_and_names()}


def inputs():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((B, T, 8, H, W)).astype(np.float32)
    c_noise = (0.25 * np.log(np.array([1.7], np.float32))).astype(np.float32)
    ctx = rng.standard_normal((B, 1, 32)).astype(np.float32)
    ids = np.array([[6.0, 127.0, 0.02]], np.float32)
    weight = rng.standard_normal((B * T, 4, H, W)).astype(np.float32)  # the loss is sum(out * weight)
    return x, c_noise, ctx, ids, weight


def torch_forward(unet, x, c_noise, ctx, ids):
    return unet(torch.from_numpy(x), torch.from_numpy(c_noise), encoder_hidden_states=torch.from_numpy(ctx),
                added_time_ids=torch.from_numpy(ids)).sample.reshape(B * T, 4, H, W)


def our_call(unet, y):
    x, c_noise, ctx, _, _ = inputs()

    def forward():
        return unet(ms.Tensor(x.reshape(B * T, 8, H, W)), ms.Tensor(np.repeat(c_noise, T)),
                    ms.Tensor(np.repeat(ctx, T, 0)), ms.Tensor(np.repeat(y, T, 0)), None, T,
                    ms.Tensor(np.zeros((B, T), np.float32)))
    return forward


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Base UNets (diffusers and ours, same weights); PEFT adapters with random A, B on the
    diffusers UNet; PEFT's state dict written as a diffusers LoRA file."""
    from peft import LoraConfig, inject_adapter_in_model
    from peft.utils import get_peft_model_state_dict

    base_t = diffusers_unet()
    base_ours = our_unet(base_t)
    base_values = snapshot(base_ours)
    names = UNetNames(base_values)
    ours_targets = list(target_layers(base_ours, ["attn"]))
    modules = [names.to_diffusers(m) for m in ours_targets]
    assert None not in modules

    peft_t = copy.deepcopy(base_t)
    inject_adapter_in_model(LoraConfig(r=RANK, lora_alpha=ALPHA, target_modules=modules), peft_t)
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for name, p in peft_t.named_parameters():
            if "lora_A" in name:
                p.copy_(torch.randn(p.shape, generator=gen) / np.sqrt(p.shape[1]))
            elif "lora_B" in name:
                p.copy_(0.5 * torch.randn(p.shape, generator=gen) / np.sqrt(p.shape[1]))
    n_lora = sum("lora_A" in n for n, _ in peft_t.named_parameters())
    assert n_lora == len(ours_targets) == 256, (n_lora, len(ours_targets))
    x, c_noise, ctx, ids, _ = inputs()
    with torch.no_grad():
        y = peft_t.add_time_proj(torch.from_numpy(ids).flatten()).reshape(B, -1).numpy()
    state = {f"unet.{k}": v.detach().numpy().copy() for k, v in get_peft_model_state_dict(peft_t).items()}
    folder = tmp_path_factory.mktemp("lora")
    peft_file = str(folder / "peft_written.safetensors")
    save_file(state, peft_file, metadata={"lora_adapter_metadata": json.dumps(
        {"unet.r": RANK, "unet.lora_alpha": ALPHA, "unet.target_modules": modules})})
    return {"base_t": base_t, "peft_t": peft_t, "base_ours": base_ours, "base_values": base_values, "y": y,
            "state": state, "peft_file": peft_file, "folder": folder, "modules": modules}


def fresh_unet(setup):
    unet = instantiate_from_config(OmegaConf.load(TINY_CONFIG).model.params.network_config)
    unet.set_train(False)
    for name, p in unet.parameters_and_names():
        p.set_data(ms.Tensor(setup["base_values"][name]))
    return unet


def test_adapters_match_peft_output_and_gradients(setup):
    peft_t = setup["peft_t"]
    x, c_noise, ctx, ids, weight = inputs()
    peft_t.zero_grad()
    out_t = torch_forward(peft_t, x, c_noise, ctx, ids)
    (out_t * torch.from_numpy(weight)).sum().backward()
    grads_t = {n: p.grad.numpy() for n, p in peft_t.named_parameters() if "lora_" in n}

    unet = fresh_unet(setup)
    adapters = attach_adapters(unet, LoRASettings(RANK, ALPHA, 0.0, ("attn",)))
    assert load_into_adapters(adapters, unet, setup["peft_file"]) == len(adapters)  # the PEFT-written file
    forward = our_call(unet, setup["y"])
    params = [p for a in adapters.values() for p in (a.down, a.up)]

    def loss():
        return (forward() * ms.Tensor(weight)).sum()
    grad_fn = ms.value_and_grad(lambda: loss(), None, params)
    _, grads = grad_fn()
    out = forward().asnumpy()
    assert_close("UNet with LoRA adapters vs PEFT on diffusers' UNet", out, out_t.detach().numpy(), rel=1e-4)

    names = UNetNames(setup["base_values"])
    ours = {}
    for p, g in zip(params, grads):
        module, role = p.name.rsplit(".lora.", 1)
        ours[(module, "lora_A" if role == "down" else "lora_B")] = g.asnumpy()
    got, want = {"lora_A": [], "lora_B": []}, {"lora_A": [], "lora_B": []}
    for name, g in grads_t.items():
        module, role = name.split(".lora_")[0], "lora_" + name.split(".lora_")[1][0]
        got[role].append(ours[(names.to_ours(module), role)].reshape(-1))
        want[role].append(g.reshape(-1))
    assert sum(len(v) for v in got.values()) == len(params)
    for role in ("lora_A", "lora_B"):
        assert_close(f"gradients of all {len(got[role])} {role} tensors vs PEFT",
                     np.concatenate(got[role]), np.concatenate(want[role]), rel=1e-4)


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


def test_lora_spec_and_settings():
    assert parse_lora_spec("a/b.safetensors") == ("a/b.safetensors", 1.0)
    assert parse_lora_spec("a/b.safetensors:0.8") == ("a/b.safetensors", 0.8)
    assert parse_lora_spec("C:/x/b.safetensors") == ("C:/x/b.safetensors", 1.0)
    assert LoRASettings.from_config({"rank": 8}).alpha == 8.0
    from svd_ms.errors import ConfigError
    for bad, needle in (({"rank": 0}, "rank"), ({"targets": ["conv"]}, "targets"), ({"dropout": 1.0}, "dropout"),
                        ({"ranks": 4}, "ranks")):
        with pytest.raises(ConfigError, match=needle):
            LoRASettings.from_config(bad)
