"""Peak memory of this process (host resident set, and the device's allocator off CPU)."""
import contextlib
from typing import Dict, Optional


def format_bytes(n: Optional[int]) -> str:
    return "n/a" if n is None else f"{n / 2**30:.2f} GiB"


def _status_field(field: str) -> Optional[int]:
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    return None


class PeakMemory:
    """Peak resident memory between reset() and read()."""

    def __init__(self, device_target: str):
        self.device_target = device_target

    def reset(self) -> None:
        with contextlib.suppress(OSError):
            with open("/proc/self/clear_refs", "w") as f:  # Linux: resets VmHWM
                f.write("5")
        if self.device_target != "CPU":
            with contextlib.suppress(Exception):
                import mindspore as ms
                ms.hal.reset_peak_memory_stats()

    def read(self) -> Dict[str, Optional[int]]:
        host = _status_field("VmHWM")
        if host is None:
            with contextlib.suppress(Exception):
                import resource
                host = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        device = None
        if self.device_target != "CPU":
            with contextlib.suppress(Exception):
                import mindspore as ms
                device = int(ms.hal.max_memory_allocated())
        return {"peak_host_bytes": host, "peak_device_bytes": device}
