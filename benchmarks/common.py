"""What every benchmark shares: where things are, how a child process is started and read back,
timing, memory readings and the deterministic random weights.

The benchmarks are a package: run them from the repository root as `python -m benchmarks.<name>`.
A benchmark that measures in a fresh process starts itself again the same way (`child_command`),
so nothing here or in a benchmark has to edit `sys.path`.
"""
import json
import math
import os
import resource
import subprocess
import sys
import time
import zlib

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULT_PREFIX = "RESULT "


# ---------------------------------------------------------------------------------- places

def reference_dir() -> str:
    """The shared upstream reference folder (tiny models, manifests): $SVD_MS_REFERENCE, then
    ../shared/reference next to the repository, then /work/shared/reference."""
    for d in (os.environ.get("SVD_MS_REFERENCE", ""), os.path.join(os.path.dirname(REPO), "shared", "reference"),
              "/work/shared/reference"):
        if d and os.path.isdir(d):
            return d
    raise SystemExit("cannot find the shared reference folder (../shared/reference or $SVD_MS_REFERENCE)")


# ---------------------------------------------------------------------------------- child processes

def child_command(module: str, *args) -> list:
    """The command that runs benchmark `module` (e.g. "e2e") again in a fresh interpreter."""
    return [sys.executable, "-m", f"benchmarks.{module}", *[str(a) for a in args]]


def run_child(module: str, *args, env=None, timeout=None) -> subprocess.CompletedProcess:
    """Run `python -m benchmarks.<module> args...` from the repository root, output captured.
    MindSpore's log level defaults to errors only, so the output is the benchmark's own."""
    env = dict(os.environ if env is None else env)
    env.setdefault("GLOG_v", "3")
    return subprocess.run(child_command(module, *args), cwd=REPO, capture_output=True, text=True, env=env, check=False,
                          timeout=timeout)


def emit(result: dict) -> None:
    """A child's answer to its parent: one line `RESULT {json}` on stdout."""
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def results_of(stdout: str) -> list:
    """Every `RESULT` line a child printed, decoded, in order."""
    return [json.loads(line[len(RESULT_PREFIX):]) for line in stdout.splitlines() if line.startswith(RESULT_PREFIX)]


def output_tail(proc: subprocess.CompletedProcess, lines: int = 15) -> str:
    """The last `lines` lines a child printed, stdout then stderr (for a failure message)."""
    text = "\n".join(part.strip() for part in (proc.stdout or "", proc.stderr or "") if part.strip())
    return "\n".join(text.splitlines()[-lines:])


# ---------------------------------------------------------------------------------- time

def time_calls(fn, warmup: int, repeats: int):
    """(first call seconds, median of `repeats` calls after `warmup` calls incl. the first, all timed calls)."""
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    for _ in range(max(warmup - 1, 0)):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return first, float(np.median(times)), times


def best_time(fn, repeats: int = 3) -> float:
    """Best of `repeats` calls after one call that compiles and warms up."""
    return min(time_calls(fn, 1, repeats)[2])


# ---------------------------------------------------------------------------------- memory

def peak_rss_bytes() -> int:
    """This process's peak resident memory (ru_maxrss is in kilobytes on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def proc_status_kb(field: str) -> int:
    """A field of /proc/self/status in kB (VmHWM, RssAnon, ...); 0 where it is missing."""
    from svd_ms.runtime.memory import status_bytes
    return (status_bytes(field) or 0) // 1024


def meminfo_gb(field: str) -> float:
    """A field of /proc/meminfo (MemTotal, MemAvailable, ...) in decimal GB; nan where unreadable."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1e6
    except OSError:
        pass
    return float("nan")


def gb(n_bytes) -> str:
    return f"{n_bytes / 1e9:.2f} GB"


# ---------------------------------------------------------------------------------- weights

def random_weight(name: str, shape) -> np.ndarray:
    """Deterministic random tensor for a tensor name, so every process rebuilds the same weights:
    N(0, 1/fan_in) for matrices and kernels, 1 + N(0, 0.1) for norm scales, N(0, 0.02) for biases,
    N(0, 1) for blend factors."""
    shape = tuple(int(s) for s in shape)
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    if name.endswith("mix_factor"):
        return rng.standard_normal(shape, dtype=np.float32)
    if len(shape) >= 2:
        fan_in = int(np.prod(shape[1:]))
        a = rng.standard_normal(shape, dtype=np.float32)
        a *= np.float32(1.0 / math.sqrt(fan_in))
        return a
    if name.endswith("weight") or name.endswith("gamma"):
        return (1.0 + 0.1 * rng.standard_normal(shape, dtype=np.float32)).astype(np.float32)
    return (0.02 * rng.standard_normal(shape, dtype=np.float32)).astype(np.float32)


def write_json_report(path, args, text: str, **rows) -> None:
    """--json: the run's arguments, its rows (under the names given) and the printed report, in one file;
    nothing when `path` is None."""
    if path:
        with open(path, "w") as f:
            json.dump({"args": vars(args), **rows, "report": text}, f, indent=1)
