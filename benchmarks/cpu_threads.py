"""What MindSpore's CPU thread settings give on this host (`svd_ms.policy.cpu_thread_settings`).

Each setting runs in a fresh process (both knobs can be set once per process): the CPU kernels'
threads (`mindspore.device_context.cpu.op_tuning.threads_num`, default 25) and the runtime's
dispatch threads (`mindspore.runtime.dispatch_threads_num`, default 5). Timed per setting, best
of 3 after a warm-up: a UNet-sized matmul and 3x3 convolution, and one video of the tiny
reference model in PyNative (as the CPU runs by default; --frames/--size/--steps).

    python -m benchmarks.cpu_threads                     # ~3 min on 2 cores
    python -m benchmarks.cpu_threads --settings 0:0,2:0,2:2
"""
import argparse
import os
import sys
import time

import numpy as np

from benchmarks import common
from benchmarks.common import best_time, emit, reference_dir, results_of


def worker(kernel: int, dispatch: int, frames: int, size: int, steps: int):
    import mindspore as ms
    from mindspore import ops
    os.environ.setdefault("ONEDNN_MAX_CPU_ISA", "AVX2")  # as setup_device puts it, before any kernel
    ms.set_device("CPU")
    ms.set_context(mode=ms.PYNATIVE_MODE)
    ms.runtime.launch_blocking()
    if kernel:
        ms.device_context.cpu.op_tuning.threads_num(kernel)
    if dispatch:
        ms.runtime.dispatch_threads_num(dispatch)
    rng = np.random.default_rng(0)
    a = ms.Tensor(rng.standard_normal((28672, 320), dtype=np.float32))
    b = ms.Tensor(rng.standard_normal((1280, 320), dtype=np.float32))
    mm = ops.MatMul(transpose_b=True)
    x = ms.Tensor(rng.standard_normal((28, 320, 32, 32), dtype=np.float32))
    w = ms.Tensor(rng.standard_normal((320, 320, 3, 3), dtype=np.float32) * 0.02)
    out = {"matmul 28672x320 @ 320x1280": best_time(lambda: mm(a, b).asnumpy()),
           "conv 3x3 320->320, 28x320x32x32": best_time(lambda: ops.conv2d(x, w, None, 1, "pad", 1).asnumpy())}
    from svd_ms.pipeline import SVDInferPipeline
    ref = reference_dir()
    pipe = SVDInferPipeline(os.path.join(ref, "tiny_svd.sgm.yaml"), os.path.join(ref, "tiny_svd.safetensors"),
                            num_frames=frames, decode_chunk_size=frames, num_steps=steps)
    image = rng.uniform(-1, 1, (1, 3, size, size)).astype(np.float32)
    out[f"tiny model video ({frames}x{size}, {steps} steps, PyNative)"] = best_time(
        lambda: pipe.generate(image, seed=0))
    t0, c0 = time.perf_counter(), time.process_time()
    pipe.generate(image, seed=0)
    out["cores busy during the video"] = (time.process_time() - c0) / (time.perf_counter() - t0)
    emit(out)


def main(argv=None):
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(*(int(v) for v in sys.argv[2:7]))
        return
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--settings", default="0:0,1:0,2:0,2:1,2:2",
                   help="kernel:dispatch thread pairs, 0 = MindSpore's default")
    p.add_argument("--frames", type=int, default=4)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--steps", type=int, default=2)
    args = p.parse_args(argv)
    columns = []
    for pair in args.settings.split(","):
        kernel, dispatch = (int(v) for v in pair.split(":"))
        proc = common.run_child("cpu_threads", "--worker", kernel, dispatch, args.frames, args.size, args.steps,
                                timeout=1800)
        found = results_of(proc.stdout)
        if not found:
            raise SystemExit(f"setting {pair} failed:\n{common.output_tail(proc)}")
        label = f"kernel {kernel or 'default (25)'}, dispatch {dispatch or 'default (5)'}"
        columns.append((label, found[0]))
    print(f"{os.cpu_count()} cores; best of 3 after a warm-up; seconds\n")
    print("| operation | " + " | ".join(c for c, _ in columns) + " |")
    print("|---|" + "---|" * len(columns))
    for name in columns[0][1]:
        fmt = "{:.2f}" if name.startswith("cores") else "{:.3f} s"
        print(f"| {name} | " + " | ".join(fmt.format(r[name]) for _, r in columns) + " |")


if __name__ == "__main__":
    main()
