"""Device setup: the process-wide settings `setup_device` puts in place on a CPU host."""
import os

import pytest

from svd_ms import policy
from svd_ms.runtime import setup_device


def test_cpu_host_caps_onednn_at_avx2_on_x86(monkeypatch):
    monkeypatch.setattr(policy.platform, "machine", lambda: "x86_64")
    assert policy.cpu_kernel_isa_cap() == "AVX2"
    monkeypatch.setattr(policy.platform, "machine", lambda: "aarch64")
    assert policy.cpu_kernel_isa_cap() is None


@pytest.mark.skipif(policy.platform.machine().lower() not in ("x86_64", "amd64"), reason="x86 hosts only")
def test_setup_device_sets_the_cap_and_keeps_a_users_choice(monkeypatch):
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    setup_device("CPU", mode=1)
    assert os.environ["ONEDNN_MAX_CPU_ISA"] == "AVX2"
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE")
    setup_device("CPU", mode=1)
    assert os.environ["ONEDNN_MAX_CPU_ISA"] == "AVX512_CORE"


def test_ascend_keeps_operator_dtypes(monkeypatch):
    """On Ascend the runtime settings pin CANN's operator precision mode to the dtypes the model
    asks for (the float32 islands), whatever MindSpore's experimental default becomes."""
    import mindspore as ms
    from svd_ms.runtime.device import apply_runtime_settings
    set_modes = []
    monkeypatch.setattr(ms.device_context.ascend.op_precision, "precision_mode", set_modes.append)
    apply_runtime_settings()
    assert set_modes == [], "nothing to pin on a CPU host"
    monkeypatch.setattr(policy, "device_target", lambda: "Ascend")
    apply_runtime_settings()
    assert set_modes == ["must_keep_origin_dtype"]
