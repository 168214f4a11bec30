"""Host memory: THE free-memory rule every check uses, and the peak memory of this process.

The free-memory rule (available_host_bytes) is the one place that says how much more host memory
a run may take; the checkpoint loader and the generation budget (runtime/budget.py) both compare
their needs with it, so a load and a generation are judged alike. The rule:
  * MemAvailable (what psutil reports as available): the kernel's own estimate of what can be
    allocated without swapping, reclaimable page cache included (MemFree would refuse a machine
    whose memory merely holds cached files);
  * swap not counted: every weight and activation is touched at every sampling step, so whatever
    lands in swap is read back at every step and the run does not finish in useful time;
  * a tenth held back (HEADROOM) for the interpreter, the framework's allocator and other
    processes: a plan that takes everything still ends in the OOM killer, which gives no message.
Amounts are bytes; messages show them in GiB (format_bytes).
"""
import contextlib
from typing import Dict, Optional

HEADROOM = 0.9  # share of the available memory a run may plan to take


def available_host_bytes() -> Optional[int]:
    """Bytes of host memory a run may still take (the rule above), or None where unknown."""
    try:
        import psutil
        return int(HEADROOM * psutil.virtual_memory().available)
    except Exception:  # psutil missing, or a platform it cannot read
        return None


def format_bytes(n: Optional[int]) -> str:
    return "n/a" if n is None else f"{n / 2**30:.2f} GiB"


def status_bytes(field: str, pid="self") -> Optional[int]:
    """A memory field of /proc/<pid>/status (VmRSS, VmHWM, RssAnon, ...) in bytes, or None where
    /proc cannot be read or has no such field."""
    with contextlib.suppress(OSError, ValueError):
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    return None


def resident_bytes() -> Optional[int]:
    """This process's resident memory now (VmRSS), or None where /proc cannot be read."""
    return status_bytes("VmRSS")


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
        host = status_bytes("VmHWM")
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


def release_cached_memory() -> None:
    """Give back what dropped models leave behind: collect the Python objects (cells sit in
    reference cycles; this alone returns a dropped pipeline's weights and compiled graphs), ask
    MindSpore to recycle its runtime memory (its compile caches and memory pool), then hand the
    freed heap back to the system (glibc keeps freed pages in the process until trimmed). The
    last two lower resident memory by a further 0.23-0.32 GB after a tiny graph-mode pipeline
    (docs/performance.md). The recycle clears every compile cache, so pipelines still in use
    compile again on their next call."""
    import gc
    gc.collect()
    with contextlib.suppress(Exception):  # a MindSpore without the call keeps its cache
        import mindspore as ms
        ms.ms_memory_recycle()
    trim_heap()


def trim_heap() -> None:
    """glibc's malloc_trim(0): return the freed pages of every heap arena to the system (a no-op
    where the C library has no such call, e.g. musl or macOS)."""
    with contextlib.suppress(Exception):
        import ctypes
        ctypes.CDLL("libc.so.6").malloc_trim(0)
