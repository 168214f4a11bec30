"""svd_ms.policy: the device-dependent decisions, asked for each device without needing it."""
import mindspore as ms
import pytest

from svd_ms import policy
from svd_ms.modules import attention


def test_default_precision_is_what_runs_on_the_device():
    assert policy.default_amp_level("Ascend") == "O2"
    assert policy.default_amp_level("CPU") == "O0" and policy.default_amp_level("GPU") == "O0"
    assert policy.resolve_amp_level("auto", "Ascend") == "O2"
    assert policy.resolve_amp_level("auto", "CPU") == "O0"
    assert policy.resolve_amp_level("O0", "Ascend") == "O0", "an explicit level wins"
    with pytest.raises(ValueError, match="amp_level"):
        policy.resolve_amp_level("O1")
    assert policy.compute_dtype("auto") == ms.float32  # this host is a CPU


def test_describe_records_the_resolved_level():
    ascend = policy.describe("auto", device="Ascend")
    assert ascend["amp_level"] == "O2" and ascend["amp_level_requested"] == "auto"
    assert ascend["unet_and_clip_weights_and_matmuls"] == "float16"
    assert ascend["attention"].startswith("flash")
    assert policy.describe("auto", "math", device="Ascend")["attention"] == "math"
    cpu = policy.describe("auto", device="CPU")
    assert cpu["amp_level"] == "O0" and cpu["attention"] == "math"


def test_attention_choice_per_device():
    assert policy.attention_implementation("auto", "Ascend") == "flash"
    assert policy.attention_implementation("flash", "CPU") == "math"
    assert policy.attention_implementation("math", "Ascend") == "math"
    with pytest.raises(ValueError, match="attention"):
        policy.attention_implementation("fast")


def test_flash_kernel_takes_the_full_size_models_head_layouts():
    # SVD UNet: 5/10/20 heads of 64; VAE mid-block: 1 head of 512; OpenCLIP ViT-H: 16 heads of 80.
    for heads, d in ((5, 64), (10, 64), (20, 64), (1, 512), (16, 80)):
        assert policy.flash_attention_fits(heads, d), (heads, d)
    assert not policy.flash_attention_fits(2, 24)  # D not a multiple of 16
    assert not policy.flash_attention_fits(1, 528)  # D above 512
    assert not policy.flash_attention_fits(257, 16)  # more than 256 heads
    assert policy.flash_attention_dtype(ms.float32) == ms.float16
    assert policy.flash_attention_dtype(ms.bfloat16) == ms.bfloat16


def test_memory_figures_behind_the_flash_decision():
    """The numbers quoted in policy.flash_attention_dtype, from the shapes at 576x1024."""
    tokens = (576 // 8) * (1024 // 8)
    per_head_frame = tokens * tokens * 4
    assert tokens == 9216 and round(per_head_frame / 1e6) == 340
    assert round(per_head_frame * 14 * 2 * 5 / 1e9, 1) == 47.6
    chunk = 5 * per_head_frame  # math path: one batch item of 5 heads per piece, over the 1 GB chunk
    assert chunk > attention.ATTENTION_CHUNK_BYTES and round(chunk / 1e9, 1) == 1.7
    assert round(14 * 2 * tokens * 320 * 2 / 1e6) == 165  # one float16 copy of q at level 1
    assert 2 * tokens > policy.FLASH_MAX_BATCH  # temporal attention batch: the kernel needs splitting


def test_loss_scaling_on_by_default_where_gradients_pass_float16(monkeypatch):
    assert policy.default_loss_scaling("fp16") and not policy.default_loss_scaling("bf16")
    assert not policy.default_loss_scaling("fp32")  # CPU: every gradient float32
    monkeypatch.setattr(policy, "device_target", lambda: "Ascend")
    assert policy.default_loss_scaling("fp32"), "the fused attention kernel's gradients are float16 on Ascend"


def test_ascend_compiles_and_lowers_conv3d(monkeypatch):
    assert policy.default_execution_mode("Ascend") == policy.GRAPH_MODE
    assert policy.default_execution_mode("CPU") == policy.PYNATIVE_MODE
    assert not policy.conv3d_lacks_fp32()
    monkeypatch.setattr(policy, "device_target", lambda: "Ascend")
    assert policy.conv3d_lacks_fp32()
