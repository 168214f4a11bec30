"""Choosing the backend and putting MindSpore's process-wide settings in place, once per process."""
import contextlib
import os
import sys
from typing import Optional, Tuple

import mindspore as ms

from .. import policy
from ..errors import UsageError, one_line
from .threads import apply_thread_settings

MODES = {0: ms.GRAPH_MODE, 1: ms.PYNATIVE_MODE}


@contextlib.contextmanager
def _quiet_stderr():
    """Silence C-level stderr: backend probes print 'cannot load ...' lines for absent drivers."""
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, ValueError, OSError):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), fd)
            yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)


def detect_device_target() -> str:
    """The best backend present: Ascend, then GPU, then CPU."""
    for target in ("Ascend", "GPU"):
        try:
            with _quiet_stderr():
                if ms.hal.is_available(target):
                    return target
        except Exception:
            continue
    return "CPU"


def select_device(target: str, device_id: Optional[int] = None) -> None:
    """ms.set_device, except that re-selecting the device a running runtime already uses is
    accepted: MindSpore refuses any set_device once kernels have run, even an identical one."""
    already = ms.get_context("device_target")
    try:
        ms.set_device(target, device_id)
    except RuntimeError as exc:
        if already == target and "initialized" in str(exc):
            return
        raise


def apply_runtime_settings() -> None:
    """Process-wide settings for the selected device; call after the mode is set and before
    any kernel runs (oneDNN reads its instruction-set cap once, at its first use)."""
    isa_cap = policy.cpu_kernel_isa_cap()
    if isa_cap is not None:
        os.environ.setdefault("ONEDNN_MAX_CPU_ISA", isa_cap)
    if policy.pynative_launch_blocking():
        ms.runtime.launch_blocking()
    apply_thread_settings()
    op_precision = policy.ascend_op_precision_mode()
    if op_precision is not None:
        ms.device_context.ascend.op_precision.precision_mode(op_precision)


def setup_device(device_target: Optional[str] = None, device_id: Optional[int] = None, mode: Optional[int] = None,
                 cluster=None) -> Tuple[str, int]:
    """Select the device (the best present when `device_target` is None), set the execution mode
    (0 graph, 1 PyNative; None: the policy's default for the device) and the runtime settings.
    Under msrun the worker's own device (DEVICE_ID) wins over `device_id`. Returns (device target,
    mode). Raises UsageError naming the flags when the device cannot be used."""
    target = device_target or detect_device_target()
    if mode is None:
        mode = policy.default_execution_mode(target)
    local = getattr(cluster, "local_device", None)
    if local is not None:
        if device_id is not None and device_id != local:
            print(f"warning: --device_id={device_id} ignored under msrun: this worker uses device {local} "
                  f"(DEVICE_ID)", file=sys.stderr, flush=True)
        device_id = local
    if device_id is None:
        device_id = int(os.environ.get("DEVICE_ID", "0"))
    if mode not in MODES:
        raise UsageError(f"--mode={mode}: must be 0 (graph) or 1 (PyNative)")
    try:
        select_device(target, None if target == "CPU" else device_id)
        ms.set_context(mode=MODES[mode])
        apply_runtime_settings()
    except Exception as exc:
        culprit = f"--device_target={target}" + (f" --device_id={device_id}" if target != "CPU" else "")
        raise UsageError(f"{culprit}: cannot use it ({one_line(exc)})") from None
    return target, mode
