"""Why svd-ms caps oneDNN at AVX2 on x86 CPU hosts (`svd_ms.policy.cpu_kernel_isa_cap`).

Times MindSpore's CPU convolution (a VAE/UNet 3x3 shape), its temporal (3, 1, 1) convolution
(as Conv3D and as the (3, 1) Conv2D the model uses) and a UNet-sized matmul, once with oneDNN's
own instruction-set choice and once capped at AVX2, each in a fresh process (oneDNN reads the
cap once); PyTorch's times for the same shapes in the same run are the peer.

    python -m benchmarks.cpu_isa
"""
import os
import sys

import numpy as np

from benchmarks import common
from benchmarks.common import best_time, emit, results_of

CASES = {
    "conv 3x3 512->512, 4x512x32x32": ("conv2d", (4, 512, 32, 32), (512, 512, 3, 3)),
    "conv 3x3 128->128, 4x128x128x128": ("conv2d", (4, 128, 128, 128), (128, 128, 3, 3)),
    "temporal conv as Conv3D, 1x128x4x128x128": ("conv3d", (1, 128, 4, 128, 128), (128, 128, 3, 1, 1)),
    "temporal conv as (3,1) Conv2D, same input": ("conv2d_t", (1, 128, 4, 128, 128), (128, 128, 3, 1, 1)),
    "matmul 28672x320 @ 320x1280": ("matmul", (28672, 320), (1280, 320)),
}


def flops(kind, x, w):
    if kind == "matmul":
        return 2.0 * x[0] * x[1] * w[0]
    return 2.0 * np.prod(x) / x[1] * w[0] * np.prod(w[1:])


def worker_mindspore():
    import mindspore as ms
    from mindspore import ops
    # launch_blocking as the model runs; the cap is this worker's environment, not the policy's
    ms.set_device("CPU")
    ms.runtime.launch_blocking()
    rng = np.random.default_rng(0)
    out = {}
    for name, (kind, xs, ws) in CASES.items():
        x = ms.Tensor(rng.standard_normal(xs, dtype=np.float32))
        w = ms.Tensor(rng.standard_normal(ws, dtype=np.float32))
        if kind == "matmul":
            mm = ops.MatMul(transpose_b=True)
            fn = lambda: mm(x, w).asnumpy()  # noqa: E731
        elif kind == "conv3d":
            fn = lambda: ops.conv3d(x, w, None, 1, "pad", (1, 0, 0)).asnumpy()  # noqa: E731
        elif kind == "conv2d_t":
            x2, w2 = x.reshape(xs[0], xs[1], xs[2], -1), w.reshape(ws[:3] + (1,))
            fn = lambda: ops.conv2d(x2, w2, None, 1, "pad", (1, 0)).asnumpy()  # noqa: E731
        else:
            fn = lambda: ops.conv2d(x, w, None, 1, "pad", 1).asnumpy()  # noqa: E731
        out[name] = best_time(fn)
    emit(out)


def worker_torch():
    import torch
    rng = np.random.default_rng(0)
    out = {}
    with torch.no_grad():
        for name, (kind, xs, ws) in CASES.items():
            x = torch.from_numpy(rng.standard_normal(xs, dtype=np.float32))
            w = torch.from_numpy(rng.standard_normal(ws, dtype=np.float32))
            if kind == "matmul":
                fn = lambda: x @ w.T  # noqa: E731
            elif kind in ("conv3d", "conv2d_t"):
                fn = lambda: torch.nn.functional.conv3d(x, w, padding=(1, 0, 0))  # noqa: E731
            else:
                fn = lambda: torch.nn.functional.conv2d(x, w, padding=1)  # noqa: E731
            out[name] = best_time(fn)
    emit(out)


def run(worker, env_extra):
    env = dict(os.environ)
    env.pop("ONEDNN_MAX_CPU_ISA", None)
    env.update(env_extra)
    proc = common.run_child("cpu_isa", "--worker", worker, env=env, timeout=1800)
    results = results_of(proc.stdout)
    if results:
        return results[0]
    raise SystemExit(f"{worker} failed:\n{proc.stderr[-2000:]}")


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        {"mindspore": worker_mindspore, "torch": worker_torch}[sys.argv[2]]()
        return
    columns = [("MindSpore, oneDNN's own ISA", run("mindspore", {})),
               ("MindSpore, ONEDNN_MAX_CPU_ISA=AVX2", run("mindspore", {"ONEDNN_MAX_CPU_ISA": "AVX2"})),
               ("PyTorch (peer)", run("torch", {}))]
    flags = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
    print(f"CPU: avx512f={'avx512f' in flags}, {os.cpu_count()} cores; best of 3 after a warm-up; "
          f"seconds (GFLOP/s)\n")
    print("| operation | " + " | ".join(c for c, _ in columns) + " |")
    print("|---|" + "---|" * len(columns))
    for name, (kind, xs, ws) in CASES.items():
        cells = [f"{r[name]:.3f} s ({flops(kind, xs, ws) / r[name] / 1e9:.0f})" for _, r in columns]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
