"""svd_ms.lora.layers: adapters on the UNet's linear layers, checked against PEFT on diffusers'
UNetSpatioTemporalConditionModel in float32 on CPU: with the adapters attached (loaded from a
PEFT-written file), the UNet output and the gradient of a loss with respect to every adapter tensor
equal PEFT's (1e-4 relative); plus the adapter's own rules (initialisation, target groups, settings).
"""
import mindspore as ms
import numpy as np
import pytest
import torch
from conftest import assert_close
from lora_reference import ALPHA, RANK, fresh_unet, inputs, our_call, torch_forward

from svd_ms.errors import ConfigError
from svd_ms.lora import UNetNames, load_into_adapters
from svd_ms.lora.layers import (
    TARGET_GROUPS,
    LoRAAdapter,
    LoRASettings,
    adapter_parameters,
    attach_adapters,
    target_layers,
)


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


def test_fresh_adapters_leave_the_output_unchanged(setup):
    """`up` starts at zero (PEFT's initialisation), so training starts from the base model exactly."""
    unet = fresh_unet(setup)
    before = our_call(unet, setup["y"])().asnumpy()
    adapters = attach_adapters(unet, LoRASettings(RANK, ALPHA, 0.0, ("attn",)), seed=3)
    assert adapters and all(not a.up.asnumpy().any() and a.down.asnumpy().any() for a in adapters.values())
    after = our_call(unet, setup["y"])().asnumpy()
    assert np.array_equal(before, after)
    again = attach_adapters(fresh_unet(setup), LoRASettings(RANK, ALPHA, 0.0, ("attn",)), seed=3)
    assert all(np.array_equal(a.down.asnumpy(), again[n].down.asnumpy()) for n, a in adapters.items())
    assert len(adapter_parameters(adapters)) == 2 * len(adapters)


def test_adapter_adds_scaled_up_down_product():
    rng = np.random.default_rng(0)
    down, up = rng.standard_normal((2, 5)).astype(np.float32), rng.standard_normal((3, 2)).astype(np.float32)
    x = rng.standard_normal((4, 5)).astype(np.float32)
    adapter = LoRAAdapter(down, up, scaling=2.5)
    adapter.set_train(False)
    got = adapter(ms.Tensor(x), ms.float32).asnumpy()
    np.testing.assert_allclose(got, 2.5 * x @ down.T @ up.T, rtol=1e-5, atol=1e-6)
    assert adapter.rank == 2


def test_target_groups_select_their_layers(setup):
    unet = fresh_unet(setup)
    attn = target_layers(unet, ["attn"])
    temporal = target_layers(unet, ["temporal_attn"])
    ff = target_layers(unet, ["ff"])
    assert len(attn) == 256 and temporal and set(temporal) < set(attn)
    assert all("time_stack." in n for n in temporal) and all(".attn" in n for n in attn)
    assert ff and not set(ff) & set(attn)
    assert set(target_layers(unet, ["attn", "ff"])) == set(attn) | set(ff)
    assert set(TARGET_GROUPS) == {"attn", "ff", "temporal_attn", "temporal_ff"}


def test_lora_settings():
    assert LoRASettings.from_config({"rank": 8}).alpha == 8.0
    assert LoRASettings.from_config({"rank": 4, "alpha": 8}).scaling == 2.0
    assert LoRASettings.from_config({"targets": "ff"}).targets == ("ff",)
    assert LoRASettings(4, 8.0, 0.0, ("attn",)).as_dict() == {"rank": 4, "alpha": 8.0, "dropout": 0.0,
                                                               "targets": ["attn"]}
    for bad, needle in (({"rank": 0}, "rank"), ({"targets": ["conv"]}, "targets"), ({"dropout": 1.0}, "dropout"),
                        ({"ranks": 4}, "ranks"), ({"rank": True}, "rank"), ({"alpha": -1}, "alpha")):
        with pytest.raises(ConfigError, match=needle):
            LoRASettings.from_config(bad)
