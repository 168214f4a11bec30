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


# ---------------------------------------------------------------------------------- choosing and refusing

def test_best_backend_present_is_detected(monkeypatch):
    from svd_ms.runtime import device

    present = set()

    def is_available(target):
        if target == "Ascend":
            raise RuntimeError("cannot load libascend")  # an absent driver's probe may raise
        return target in present
    monkeypatch.setattr(device.ms.hal, "is_available", is_available)
    assert device.detect_device_target() == "CPU"
    present.add("GPU")
    assert device.detect_device_target() == "GPU"


def test_bad_mode_is_a_usage_error_naming_the_flag():
    from svd_ms.errors import UsageError

    with pytest.raises(UsageError, match=r"^--mode=5: must be 0 \(graph\) or 1 \(PyNative\)$"):
        setup_device("CPU", mode=5)


def test_unusable_device_is_one_line_naming_target_and_id(monkeypatch):
    from svd_ms.errors import UsageError
    from svd_ms.runtime import device

    def refuse(target, device_id=None):
        raise RuntimeError(f"device {device_id} of {target} not found\n----- C++ Call Stack -----\nframe")
    monkeypatch.setattr(device, "select_device", refuse)
    with pytest.raises(UsageError) as err:
        setup_device("GPU", device_id=3, mode=1)
    message = str(err.value)
    assert message.startswith("--device_target=GPU --device_id=3: cannot use it (RuntimeError: device 3 of GPU")
    assert "\n" not in message and "C++" not in message


def test_msrun_workers_device_wins_over_the_flag(monkeypatch, capsys):
    from svd_ms.runtime import Cluster, device

    chosen = []
    monkeypatch.setattr(device, "select_device", lambda target, device_id=None: chosen.append((target, device_id)))
    monkeypatch.setattr(device, "apply_runtime_settings", lambda: None)
    worker = Cluster({"MS_ROLE": "MS_WORKER", "MS_WORKER_NUM": "2", "RANK_ID": "1", "DEVICE_ID": "1"})
    assert setup_device("GPU", device_id=0, mode=1, cluster=worker) == ("GPU", 1)
    assert chosen == [("GPU", 1)]
    assert "--device_id=0 ignored under msrun: this worker uses device 1" in capsys.readouterr().err
    setup_device("CPU", mode=1)  # back to the session's device settings


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
