"""Applying the precision policy (`svd_ms.policy`) to a built engine: which layers compute, and
store their weights, in float16/bfloat16, and which stay float32."""
import sys
from typing import Dict

import mindspore as ms

from . import policy
from .modules.encoders.open_clip import MultiheadSelfAttention, VisionTransformer
from .modules.layers import Linear, _ConvNd


def _lowered_precision_roots(engine):
    """The sub-networks whose weights and matmuls go to float16 under O2: the UNet and the
    OpenCLIP image tower. The VAE (first stage and conditioning encoder) is never lowered."""
    roots = [("model.diffusion_model.", engine.model.diffusion_model)]
    for name, cell in engine.conditioner.cells_and_names():
        if isinstance(cell, VisionTransformer):
            roots.append((f"conditioner.{name}.", cell))
    return roots


def _lower_layers(roots, layer_types, dtype, cast_parameters: bool) -> Dict[str, str]:
    """Set `dtype` as the compute dtype of every layer of `layer_types` under the (prefix, cell)
    roots, except the policy's FP32_EMBEDDING_LAYERS; with `cast_parameters` their weights are
    stored in `dtype` too. Returns {layer name: dtype name}."""
    decided: Dict[str, str] = {}
    for prefix, root in roots:
        for name, cell in root.cells_and_names():
            if not isinstance(cell, layer_types):
                continue
            full = prefix + name
            keep = any(tag in full for tag in policy.FP32_EMBEDDING_LAYERS)
            cell.compute_dtype = ms.float32 if keep else dtype
            if cast_parameters and not keep:
                for param in cell.get_parameters(expand=False):
                    param.set_dtype(dtype)
            decided[full] = "float32" if keep else str(dtype).lower()
    return decided


def apply_precision(engine, amp_level: str) -> Dict[str, str]:
    """Apply `amp_level` to a built engine (after its weights are loaded).

    O0 leaves everything float32. O2 stores the UNet's and image tower's matmul/conv weights in
    float16 and runs those layers in float16; normalisations, softmax, embeddings, blends, the
    denoiser arithmetic, the sampler and the VAE stay float32 (policy.FP32_ISLANDS).
    'auto' is the device's default (policy.default_amp_level), said on stderr where that is not
    float32 (on Ascend). Returns {layer name: dtype} for every matmul/conv layer it decided on.
    """
    level = policy.resolve_amp_level(amp_level)
    if amp_level == "auto" and level != "O0":
        print(f"precision: amp_level auto -> {level} on {policy.device_target()} "
              f"({policy.describe(level)['unet_and_clip_weights_and_matmuls']} UNet and image encoder)",
              file=sys.stderr, flush=True)
    dtype = policy.compute_dtype(amp_level)
    if dtype == ms.float32:
        return {}
    return _lower_layers(_lowered_precision_roots(engine), (Linear, _ConvNd, MultiheadSelfAttention), dtype,
                         cast_parameters=True)


def apply_training_precision(engine, precision: str) -> Dict[str, str]:
    """Mixed precision for fine-tuning: the UNet's matmuls and convolutions compute in fp16/bf16
    while its parameters stay float32 master weights (each layer casts its weight per call, so
    gradients and optimizer updates are float32). The FP32_ISLANDS stay float32, and the frozen
    conditioner and VAE run in float32. Returns {layer name: dtype} for the layers decided on."""
    dtype = policy.training_compute_dtype(precision)
    if dtype == ms.float32:
        return {}
    return _lower_layers([("model.diffusion_model.", engine.model.diffusion_model)], (Linear, _ConvNd), dtype,
                         cast_parameters=False)
