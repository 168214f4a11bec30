"""Every device- and precision-dependent decision of svd-ms, in one place.

Model code never asks which backend it runs on; it asks this module. This module is a leaf: it
imports no model code (the appliers that walk a built model live in `svd_ms.precision`). The table in the README
("Precision and device policy") is generated from `describe()` and must stay in step with it.
"""
import os
import platform
from typing import Dict, Optional

import mindspore as ms

# "auto": the device's default (default_amp_level); O0 float32; O2 float16 with float32 islands.
AMP_LEVELS = ("auto", "O0", "O2")
ATTENTION_CHOICES = ("auto", "math", "flash")

# What MindSpore 2.10 documents for ops.flash_attention_score (its docstring in
# mindspore/ops/operations/manually_defined/ops_def.py): "B: Batch size. Value range 1 to 2k",
# "N1: Num heads of query. Value range 1 to 256", "D: Head size ... a multiple of 16, with the
# max value of 512", "The supported dtype is float16 and bfloat16".
FLASH_MAX_BATCH = 2048
FLASH_MAX_HEADS = 256
FLASH_HEAD_DIM_MULTIPLE, FLASH_MAX_HEAD_DIM = 16, 512


def device_target() -> str:
    return ms.get_context("device_target")


def conv_implementation() -> str:
    """'native' (the backend's Conv2D/Conv3D kernels) or 'matmul' (gather + 2-D matmul).

    Native everywhere by default. On CPU this follows `benchmarks/conv_paths.py` (README,
    "Performance"): with MindSpore 2.10 the native CPU kernels ran at 40-140 GFLOP/s on the
    model's shapes, and gather + matmul won only on a few deep UNet levels (by 10-30%) while
    losing up to 11x on the VAE's wide, few-channel images; over one of each shape it took 1.9x
    the time. `SVD_MS_CONV=matmul` forces the matmul path (for a CPU build whose native
    kernels are slow), `SVD_MS_CONV=native` the kernels; the tests compare the two.
    """
    forced = os.environ.get("SVD_MS_CONV")
    if forced in ("native", "matmul"):
        return forced
    return "native"


def attention_implementation(requested: str = "auto", device: Optional[str] = None) -> str:
    """'flash' (fused kernel, no N x N scores in memory) or 'math' (explicit fp32 softmax)."""
    if requested not in ATTENTION_CHOICES:
        raise ValueError(f"attention must be one of {ATTENTION_CHOICES}, got '{requested}'")
    if requested == "math":
        return "math"
    on_ascend = (device or device_target()) == "Ascend"
    if requested == "flash" and not on_ascend:
        # The fused kernel exists only on Ascend; elsewhere the math path is the only path.
        return "math"
    return "flash" if on_ascend else "math"


def flash_attention_fits(heads: int, head_dim: int) -> bool:
    """Whether the fused kernel takes this head layout; other layouts run the math path."""
    return 1 <= heads <= FLASH_MAX_HEADS and head_dim % FLASH_HEAD_DIM_MULTIPLE == 0 and head_dim <= FLASH_MAX_HEAD_DIM


def flash_attention_dtype(dtype):
    """The dtype q, k and v are handed to the fused kernel in. It takes float16 and bfloat16 only,
    so float32 (amp_level O0) is rounded to float16 for the kernel and its output cast back.

    Why not the math path at O0: at 576x1024 the first UNet level's spatial attention has 9216
    tokens; its float32 scores are 9216^2 x 4 B = 340 MB per head and frame, 47.6 GB per layer for
    14 frames x 2 (guidance) x 5 heads. The math path forms them in ATTENTION_CHUNK_BYTES pieces
    (1.7 GB each here, and as much again for the probabilities), and a compiled graph may keep all
    28 pieces alive (MindSpore 2.10's CPU graph kept every activation of a step, README
    "Performance"): that does not fit a 32 or 64 GB NPU. The kernel keeps no score matrix; the
    float16 copies of q, k and v cost 3 x 165 MB. The price: q, k, v and the output carry float16
    rounding (2^-11 relative) at O0; attention="math" keeps them float32.
    """
    return dtype if dtype in (ms.float16, ms.bfloat16) else ms.float16


def default_amp_level(device: Optional[str] = None) -> str:
    """The precision that runs on the device. Ascend: O2 (float16 with float32 islands). mindone
    documents its SVD pipeline on Ascend as float16 only (float32 runs out of memory, and the 910
    has no float32 Conv3D kernel). Elsewhere O0 (float32)."""
    return "O2" if (device or device_target()) == "Ascend" else "O0"


# bfloat16 inference is not offered: no amp_level runs the UNet in bfloat16. Decided from MindSpore
# 2.10's own docstrings (the installed package) for the operations a bfloat16 UNet would hand
# bfloat16 tensors: ops.flash_attention_score takes it ("The supported dtype is float16 and
# bfloat16"), but ops.silu, which every ResBlock (and SV4D 2.0's view/frame embedders) applies to
# activations in the compute dtype, documents float16 and float32 only and lists a TypeError for
# anything else. MatMul and Conv2D name no dtype list; the normalisations and softmax are float32
# islands; the full 3-D Conv3d is in the float32 VAE and gets float16 on Ascend anyway.
# tests/ascend/test_bf16_decision.py checks these quotes against the installed docstrings.
BF16_REFUSED_BY = {
    "ops.silu": ("mindspore/ops/auto_generate/gen_ops_def.py, silu docstring",
                 "TypeError: If dtype of `input` is neither float16 nor float32."),
}
BF16_TAKEN_BY = {
    "ops.flash_attention_score": ("mindspore/ops/operations/manually_defined/ops_def.py, flash_attention_score "
                                  "docstring", "The supported dtype is float16 and bfloat16."),
}


def bf16_inference_refusal() -> str:
    """The one-line reason bfloat16 inference is not offered (for errors and docs)."""
    op, (source, quote) = next(iter(BF16_REFUSED_BY.items()))
    return (f"bfloat16 inference is not offered: the UNet runs {op} in its compute dtype, and MindSpore 2.10 "
            f"documents it for float16 and float32 only ({source}: '{quote}'); use O2 (float16)")


def resolve_amp_level(amp_level: str, device: Optional[str] = None) -> str:
    """'O0' or 'O2': the requested level, or the device's default for 'auto'."""
    if isinstance(amp_level, str) and amp_level.lower() in ("bf16", "bfloat16"):
        raise ValueError(f"amp_level '{amp_level}': {bf16_inference_refusal()}")
    if amp_level not in AMP_LEVELS:
        raise ValueError(f"amp_level must be one of {AMP_LEVELS}, got '{amp_level}'")
    return default_amp_level(device) if amp_level == "auto" else amp_level


def compute_dtype(amp_level: str):
    """Dtype of weights and of matmul/conv arithmetic in the UNet and the image embedder."""
    return ms.float16 if resolve_amp_level(amp_level) == "O2" else ms.float32


GRAPH_MODE, PYNATIVE_MODE = 0, 1


def cpu_kernel_isa_cap() -> Optional[str]:
    """The highest instruction set MindSpore's CPU kernels (oneDNN) may use, or None to leave
    oneDNN's own choice. On an x86 host with AVX-512, MindSpore 2.10's oneDNN convolutions fall to
    a path of about 1.7 GFLOP/s (a 4x512x16x16 3x3 convolution: 2.8 s; capped at AVX2: 0.02 s),
    which costs far more than the matmuls lose by the cap (~390 -> ~220 GFLOP/s). Setting
    ONEDNN_MAX_CPU_ISA yourself overrides this. The project's CPU kernels run in their own instance
    of the library (cpu_kernels/onednn.h), which the cap does not reach. Measured: README
    "Performance"."""
    if device_target() != "CPU" or platform.machine().lower() not in ("x86_64", "amd64"):
        return None
    return "AVX2"


def default_execution_mode(target: str) -> int:
    """Graph mode where it pays, PyNative where graph mode does not fit: MindSpore 2.10's CPU
    graph keeps every activation of the compiled denoiser step alive (14 frames of 256x256 were
    killed at 23.5 GB, PyNative needed 9.4 GB; README "Performance"). Compiling each UNet block
    on its own did not help: every compiled block keeps its activations after it ran (killed at
    24.3 GB as well). Accelerators compile."""
    return PYNATIVE_MODE if target == "CPU" else GRAPH_MODE


def ascend_op_precision_mode() -> Optional[str]:
    """CANN's operator precision mode to set on Ascend, None elsewhere: 'must_keep_origin_dtype',
    so that the float32 islands (FP32_ISLANDS) stay float32. MindSpore 2.10 defaults to it but calls
    that default experimental (mindspore/device_context/ascend/op_precision.py, precision_mode), and
    releases up to 2.5 defaulted Atlas training-series (910A) devices to 'force_fp16' (their
    precision_mode page), which runs every operator that has a float16 kernel in float16 without a
    word: GroupNorm, softmax and the VAE included. The cost on a 910A: CANN runs a float32
    operator that its AI Core implements in float16 only on the AI CPU, or refuses it (CANN's
    precision_mode_v2 'origin'); the float32 VAE convolutions may do that there. 910B-class
    devices have float32 kernels."""
    return "must_keep_origin_dtype" if device_target() == "Ascend" else None


def conv3d_lacks_fp32() -> bool:
    """Ascend 910-class devices have no fp32 Conv3D kernel: that single op runs in fp16 there."""
    return device_target() == "Ascend"


# Regions kept in float32 under O2 ("fp32 islands"), with the reason each one matters.
FP32_ISLANDS: Dict[str, str] = {
    "GroupNorm": "variance of large activations overflows fp16",
    "LayerNorm": "same, over the channel axis",
    "attention softmax": "scores q.k/sqrt(d) exceed fp16 range before normalisation",
    "timestep / micro-conditioning embeddings": "sin/cos of arguments up to 1e4 lose all precision in fp16",
    "AlphaBlender mix": "sigmoid(mix_factor) close to 0 or 1",
    "denoiser scalings and guidance": "sigma reaches 700; sigma**2 overflows fp16",
    "sampler state": "the Euler update accumulates over all steps",
    "VAE encoder and decoder": "decoder activations exceed fp16 range (black frames)",
}


def describe(amp_level: str, attention: str = "auto", device: Optional[str] = None) -> Dict[str, str]:
    """The effective choices for one run, for logs and sidecars. `amp_level` is the resolved
    level; `amp_level_requested` what was asked for ('auto': the device's default)."""
    device = device or device_target()
    requested, amp_level = amp_level, resolve_amp_level(amp_level, device)
    dtype = "float16" if amp_level == "O2" else "float32"
    implementation = attention_implementation(attention, device)
    if implementation == "flash":
        implementation += " (fused kernel; q, k, v in float16 for it, softmax float32 inside)"
    return {
        "device": device,
        "amp_level": amp_level,
        "amp_level_requested": requested,
        "unet_and_clip_weights_and_matmuls": dtype,
        "fp32_islands": ", ".join(FP32_ISLANDS) if amp_level == "O2" else "everything is float32",
        "vae": "float32" + (" (Conv3d in float16: no fp32 kernel)" if device == "Ascend" else ""),
        "attention": implementation,
        "convolution": "gather + matmul" if conv_implementation() == "matmul" else "native kernels",
    }

# Linear layers that embed timesteps / frame indices / micro-conditioning stay float32 under O2.
FP32_EMBEDDING_LAYERS = ("time_embed.", "label_emb.", "time_pos_embed.", "video_time_embed.")


# ---- training ------------------------------------------------------------------------------
TRAIN_PRECISIONS = ("fp32", "fp16", "bf16")


def pynative_launch_blocking() -> bool:
    """Run PyNative ops synchronously. On CPU, MindSpore's asynchronous op pipeline spins its
    threads against the compute threads: a tiny-model UNet step measured 80 s asynchronous and
    6 s blocking on a busy 2-core machine. Accelerators keep the asynchronous pipeline."""
    return device_target() == "CPU"


def training_compute_dtype(precision: str):
    if precision not in TRAIN_PRECISIONS:
        raise ValueError(f"precision must be one of {TRAIN_PRECISIONS}, got '{precision}'")
    if precision == "bf16" and device_target() == "CPU":
        raise ValueError("precision bf16 needs Ascend or GPU: MindSpore's CPU matmul and convolution "
                         "kernels have no bfloat16 version (use fp16 or fp32 on CPU)")
    return {"fp32": ms.float32, "fp16": ms.float16, "bf16": ms.bfloat16}[precision]


def default_loss_scaling(precision: str) -> bool:
    """Dynamic loss scaling by default for fp16 (bf16 has float32's exponent range), and for fp32
    on Ascend: the fused attention kernel takes q, k, v in float16 there (flash_attention_dtype)
    and hands back float16 gradients, where small ones flush unscaled (through the kernel's
    contract double on the tiny model: a time_mixer gradient 3.3e-2 relative off unscaled, 7e-4
    at the trainer's initial scale; tests/ascend/test_training_on_ascend.py)."""
    return precision == "fp16" or (precision == "fp32" and device_target() == "Ascend")


def _switch_on_cpu(variable: str, choices: tuple, chosen: str, device: Optional[str]) -> bool:
    """Whether the environment `variable` names `chosen` when it names one of `choices`; else
    whether `device` (default: the selected one) is the CPU."""
    forced = os.environ.get(variable)
    if forced in choices:
        return forced == chosen
    return (device or device_target()) == "CPU"


def composed_group_norm(device: Optional[str] = None) -> bool:
    """GroupNorm from vectorised operators (svd_ms/modules/composed_kernels.py) instead of the
    backend's GroupNorm kernel: on CPU, where MindSpore 2.10's kernel is slow (0.16 s against the
    composition's 0.086-0.097 s on 8x128x128x128, PyTorch 0.03-0.05 s; docs/performance.md).
    Ascend and GPU keep their native kernels. SVD_MS_GROUP_NORM=native|composed forces one
    (tests/modules/test_composed_kernels.py checks the composition against PyTorch)."""
    return _switch_on_cpu("SVD_MS_GROUP_NORM", ("native", "composed"), "composed", device)


def cpu_gelu_kernel(device: Optional[str] = None) -> bool:
    """The exact GELU through the project's ahead-of-time CPU kernel (svd_ms/modules/cpu_kernels)
    instead of composed operators: MindSpore 2.10's CPU `Erf` evaluates one value at a time (42 M
    values: 0.348 s composed, 0.027 s the kernel, PyTorch 0.064 s; `python -m benchmarks.cpu_norms`,
    docs/performance.md). Ascend and GPU keep the composition. SVD_MS_GELU=kernel|composed forces one
    (tests/modules/test_cpu_kernels.py checks the kernel against PyTorch)."""
    return _switch_on_cpu("SVD_MS_GELU", ("kernel", "composed"), "kernel", device)


def cpu_group_norm_kernel(device: Optional[str] = None) -> bool:
    """GroupNorm's forward pass through the project's ahead-of-time CPU kernel (svd_ms/modules/
    cpu_kernels/group_norm.cc; training mode keeps the composition, checked against upstream):
    one launch instead of a dozen (the temporal VAE's 58 GroupNorms took 1.4 s of a 7.5 s decode
    of 4x128 composed; docs/performance.md). Ascend and GPU keep their kernels.
    SVD_MS_GROUP_NORM=native|composed turns it off (as for `composed_group_norm`), =kernel forces it."""
    return _switch_on_cpu("SVD_MS_GROUP_NORM", ("native", "composed", "kernel"), "kernel", device)


def cpu_conv_kernel(device: Optional[str] = None) -> bool:
    """Stride-1 float32 convolutions through the project's ahead-of-time CPU kernel (svd_ms/modules/
    cpu_kernels/conv2d.cc: oneDNN's direct convolutions on channel-blocked data, in the kernels' own
    uncapped instance of MindSpore's oneDNN) instead of MindSpore's Conv2D, where the layer's size
    rules say it wins (layers.CONV_KERNEL_MIN_WORK, TEMPORAL_KERNEL_MIN_POSITIONS): in a 4x128
    temporal VAE decode, 3.64 s of convolution against PyTorch's 3.61 s in its own decode
    (docs/performance.md). Ascend and GPU keep their kernels. SVD_MS_CONV_KERNEL=kernel|native
    forces one."""
    return _switch_on_cpu("SVD_MS_CONV_KERNEL", ("kernel", "native"), "kernel", device)


def cpu_linear_kernel(device: Optional[str] = None) -> bool:
    """Linear layers through the project's ahead-of-time CPU kernel (svd_ms/modules/cpu_kernels/
    linear.cc: tokens taken as they lie, the bias folded into the GEMM) in inference, instead of a
    reshape, MatMul, BiasAdd and reshape back, whose views MindSpore copies (docs/performance.md).
    Ascend and GPU keep theirs. SVD_MS_LINEAR=kernel|native forces one."""
    return _switch_on_cpu("SVD_MS_LINEAR", ("kernel", "native"), "kernel", device)


def cpu_layer_norm_kernel(device: Optional[str] = None) -> bool:
    """LayerNorm's forward pass through the project's ahead-of-time CPU kernel (svd_ms/modules/
    cpu_kernels/layer_norm.cc) in inference: MindSpore 2.10's CPU LayerNorm took 3.4 ms for 2048
    rows of 320 values against PyTorch's 0.12 ms (docs/performance.md). Ascend and GPU keep theirs.
    SVD_MS_LAYER_NORM=kernel|native forces one."""
    return _switch_on_cpu("SVD_MS_LAYER_NORM", ("kernel", "native"), "kernel", device)


def cpu_attention_kernel(device: Optional[str] = None) -> bool:
    """Float32 attention through the project's ahead-of-time CPU kernel (svd_ms/modules/cpu_kernels/
    attention.cc: each head read where it lies, two GEMMs around a row softmax per block of
    queries) instead of composed operators, in inference: the composition copies q, k and v to split
    their heads and copies the result back, about ten launches per call (docs/performance.md).
    Ascend and GPU keep theirs. SVD_MS_ATTENTION_KERNEL=kernel|composed forces one."""
    return _switch_on_cpu("SVD_MS_ATTENTION_KERNEL", ("kernel", "composed"), "kernel", device)


def cpu_thread_settings(cores: int) -> Dict[str, Optional[int]]:
    """MindSpore's CPU thread counts for a host with `cores` cores (None: MindSpore's default).
    Kernel threads = cores: MindSpore 2.10 starts 25 kernel threads whatever the host, and on a
    2-core host they spin against each other: one tiny-model video (4x128, 2 steps, PyNative) took
    14.4 s with the default and 6.1 s with 2 (`python -m benchmarks.cpu_threads`, docs/
    performance.md). The runtime's dispatch threads stay at the default (measured no gain)."""
    return {"kernel_threads": max(1, int(cores)), "dispatch_threads": None}
