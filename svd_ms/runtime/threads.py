"""MindSpore's CPU thread settings, put in place once per process from the policy's choice.

MindSpore 2.10 has two knobs, each settable once per process (a second call raises
RuntimeError "can not be set repeatedly"): `mindspore.device_context.cpu.op_tuning.threads_num`
(the CPU kernels' thread pool; 25 by default whatever the host) and
`mindspore.runtime.dispatch_threads_num` (the runtime's own actor threads; 5 by default).
`policy.cpu_thread_settings` says what to set from the host's cores; SVD_MS_CPU_THREADS=<n>
overrides the kernel threads. Measured: `python -m benchmarks.cpu_threads` (docs/performance.md).
"""
import os
from typing import Dict, Optional

from .. import policy

_applied: Dict[str, int] = {}


def host_cores() -> int:
    """Cores this process may run on (its affinity mask, which containers and taskset narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _requested(cores: int) -> Dict[str, Optional[int]]:
    settings = dict(policy.cpu_thread_settings(cores))
    forced = os.environ.get("SVD_MS_CPU_THREADS", "").strip()
    if forced:
        if not forced.isdigit() or int(forced) < 1:
            raise ValueError(f"SVD_MS_CPU_THREADS={forced!r}: must be a positive whole number")
        settings["kernel_threads"] = int(forced)
    return settings


def kernel_threads() -> int:
    """The CPU kernel threads this process uses (or will, once the settings are applied): what the
    project's own CPU kernels split their work over."""
    return _applied.get("kernel_threads") or _requested(host_cores()).get("kernel_threads") or host_cores()


def apply_thread_settings(cores: Optional[int] = None) -> Dict[str, int]:
    """Set the policy's thread counts on the CPU backend (no-op elsewhere and for what the process
    already set, by this function or by the user's own code). Returns what this process has set."""
    if policy.device_target() != "CPU":
        return dict(_applied)
    import mindspore as ms
    from mindspore._c_expression import RuntimeConf
    conf = RuntimeConf.get_instance()
    settings = _requested(host_cores() if cores is None else cores)
    kernel, dispatch = settings.get("kernel_threads"), settings.get("dispatch_threads")
    if kernel is not None and not conf.is_op_threads_num_configured():
        ms.device_context.cpu.op_tuning.threads_num(kernel)
        _applied["kernel_threads"] = kernel
    if dispatch is not None and not conf.is_dispatch_threads_num_configured():
        ms.runtime.dispatch_threads_num(dispatch)
        _applied["dispatch_threads"] = dispatch
    return dict(_applied)
