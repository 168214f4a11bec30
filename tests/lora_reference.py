"""The PEFT reference the LoRA tests (tests/lora/) compare svd_ms/lora with: PEFT on diffusers'
UNetSpatioTemporalConditionModel, and this project's UNet with the same base weights.

The tiny reference UNet's structure (tiny_svd.sgm.yaml) is built in diffusers with random base
weights, which reach this project's UNet through svd_tools' diffusers name map. PEFT puts LoRA
layers with random (nonzero) A and B on the attention projections of every spatial and temporal
transformer block; its state dict, written as diffusers writes LoRA files, is what this project
loads. tests/lora/conftest.py builds it once per session as the fixture `setup`.
"""
import copy
import json

import mindspore as ms
import numpy as np
import torch
from conftest import TINY_CONFIG
from omegaconf import OmegaConf
from safetensors.numpy import save_file

from svd_ms import diffusers_map as dm
from svd_ms.lora import UNetNames, target_layers
from svd_ms.util import instantiate_from_config

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


def build_reference(folder):
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
    ids = inputs()[3]
    with torch.no_grad():
        y = peft_t.add_time_proj(torch.from_numpy(ids).flatten()).reshape(B, -1).numpy()
    state = {f"unet.{k}": v.detach().numpy().copy() for k, v in get_peft_model_state_dict(peft_t).items()}
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


