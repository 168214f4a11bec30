"""svd_ms.runtime.memory: THE free-memory rule (MemAvailable, no swap, a tenth held back) and the
peak-memory reading."""
import types

import numpy as np

from svd_ms.runtime import budget, memory


def test_rule_is_nine_tenths_of_available_without_swap(monkeypatch):
    import psutil
    monkeypatch.setattr(psutil, "virtual_memory", lambda: types.SimpleNamespace(available=10 * 2**30, free=2**30))
    monkeypatch.setattr(psutil, "swap_memory", lambda: types.SimpleNamespace(free=100 * 2**30))
    assert memory.available_host_bytes() == int(0.9 * 10 * 2**30)
    assert budget.available_host_bytes is memory.available_host_bytes  # one rule, whichever module names it


def test_unknown_when_it_cannot_be_read(monkeypatch):
    import psutil

    def broken():
        raise OSError("no /proc")
    monkeypatch.setattr(psutil, "virtual_memory", broken)
    assert memory.available_host_bytes() is None


def test_real_machine_reading_is_plausible():
    import psutil
    got = memory.available_host_bytes()
    assert got is not None and 0 < got <= psutil.virtual_memory().total


def test_format_and_peak():
    assert memory.format_bytes(None) == "n/a" and memory.format_bytes(3 * 2**29) == "1.50 GiB"
    peak = memory.PeakMemory("CPU")
    peak.reset()
    block = np.ones(64 * 2**20 // 8)  # 64 MiB touched
    reading = peak.read()
    assert reading["peak_device_bytes"] is None and reading["peak_host_bytes"] >= block.nbytes



def test_release_collects_dropped_cycles_then_recycles(monkeypatch):
    """release_cached_memory frees Python cycles first (cells hold each other), then asks MindSpore
    to recycle: in that order, or the pool still sees the dropped model as alive."""
    import gc
    import weakref

    import mindspore as ms
    events = []

    class Node:
        pass
    a, b = Node(), Node()
    a.other, b.other = b, a  # a cycle, as a cell tree is
    weakref.finalize(a, events.append, "collected")
    del a, b
    gc.disable()  # no automatic collection may run before the call
    try:
        monkeypatch.setattr(ms, "ms_memory_recycle", lambda: events.append("recycled"))
        memory.release_cached_memory()
    finally:
        gc.enable()
    assert events == ["collected", "recycled"]
