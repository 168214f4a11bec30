"""LoRA files for the tiny models' UNets, written in diffusers' names (as people publish them):
random down/up matrices on every `every`-th attention projection, for the tests that merge and
switch adapters (tests/lora/test_switch.py, tests/app/test_service.py)."""
import numpy as np

from svd_ms.lora import UNetNames, target_layers, unet_of, write_lora


def write_adapter(path, model, seed, every=1, rank=2, alpha=4.0, size=0.1):
    unet = unet_of(model)
    params = dict(unet.parameters_and_names())
    names = UNetNames(params)
    rng = np.random.default_rng(seed)
    tensors = {}
    for module in list(target_layers(unet, ["attn"]))[::every]:
        out_dim, in_dim = params[f"{module}.weight"].shape[:2]
        tensors[names.to_diffusers(module)] = (rng.standard_normal((rank, in_dim)).astype(np.float32) * size,
                                               rng.standard_normal((out_dim, rank)).astype(np.float32) * size)
    write_lora(str(path), tensors, rank=rank, alpha=alpha)
    return str(path)
