"""Peak memory of converting a full-size SVD checkpoint with svd_tools.convert.

Makes random weights with every name and shape of the real checkpoint (from the manifest in
../shared/reference/manifest/), writes them as a .safetensors file one tensor at a time, runs
the converter on it in a child process and reports the child's peak resident set size (the
kernel's ru_maxrss for that process) against the size of the .ckpt it wrote.

    python -m benchmarks.convert_memory                    # svd layout, float32 input (9.56 GB)
    python -m benchmarks.convert_memory --in_dtype fp16    # as a half-precision file
    python -m benchmarks.convert_memory --manifest svd_image_decoder.keys.json --config configs/svd_image_decoder.yaml

Run from the repository root (or after `pip install -e .`).

Needs about twice the checkpoint size of free disk (input + output) in --work_dir; both
files are deleted at the end unless --keep.  Not a test: it takes minutes.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

from benchmarks.common import REPO
from benchmarks.common import gb as _gb
from benchmarks.common import reference_dir as _ref_dir
from svd_tools.safetensors_stream import write_safetensors


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--manifest", default="svd.keys.json", help="manifest file name (or path)")
    p.add_argument("--config", default=os.path.join(REPO, "configs", "svd.yaml"))
    p.add_argument("--in_dtype", choices=["fp32", "fp16"], default="fp32",
                   help="dtype of the generated input; the released svd*.safetensors are float32 (9.56 GB)")
    p.add_argument("--out_dtype", choices=["keep", "fp32", "fp16"], default="keep", help="--dtype for the converter")
    p.add_argument("--work_dir", default=None, help="where to put the temporary files (default: a new folder in /tmp)")
    p.add_argument("--keep", action="store_true", help="keep the generated input and the output")
    args = p.parse_args()

    manifest = args.manifest if os.path.isfile(args.manifest) else os.path.join(_ref_dir(), "manifest", args.manifest)
    with open(manifest) as f:
        shapes = {k: tuple(v) for k, v in json.load(f).items()}
    in_dtype = {"fp32": "float32", "fp16": "float16"}[args.in_dtype]
    n_values = sum(int(np.prod(s, dtype=np.int64)) for s in shapes.values())
    in_bytes = n_values * np.dtype(in_dtype).itemsize
    work = args.work_dir or tempfile.mkdtemp(prefix="svd_convert_memory_", dir="/tmp")
    os.makedirs(work, exist_ok=True)
    free = shutil.disk_usage(work).free
    if free < 2.1 * in_bytes:
        raise SystemExit(f"need about {_gb(2.1 * in_bytes)} free in {work}, have {_gb(free)}")

    src = os.path.join(work, "svd_random.safetensors")
    out_dir = os.path.join(work, "out")
    try:
        print(f"writing {len(shapes)} random tensors ({n_values:,} values, {in_dtype}) to {src} ...", flush=True)
        t0 = time.time()
        rng = np.random.default_rng(0)

        def produce(name):
            a = rng.standard_normal(int(np.prod(shapes[name], dtype=np.int64)), dtype=np.float32)
            a *= 0.02
            return a.astype(in_dtype, copy=False).reshape(shapes[name])

        specs = [(k, in_dtype, s) for k, s in shapes.items()]
        if args.keep and os.path.isfile(src) and os.path.getsize(src) > in_bytes:
            print("  reusing the file of an earlier --keep run")
        else:
            write_safetensors(src, specs, produce)
        print(f"  {_gb(os.path.getsize(src))} in {time.time() - t0:.0f} s", flush=True)

        cmd = [sys.executable, "-m", "svd_tools.convert", "--pt_weights_file", src,
               "--config", args.config, "--out_dir", out_dir, "--dtype", args.out_dtype, "--force"]
        print("converting ...", flush=True)
        t0 = time.time()
        import resource

        own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        child = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        sampled = [0]

        def sample():  # a second opinion on the peak, from /proc, every 0.2 s
            import psutil

            try:
                proc = psutil.Process(child.pid)
                while child.poll() is None:
                    sampled[0] = max(sampled[0], proc.memory_info().rss)
                    time.sleep(0.2)
            except Exception:
                pass

        watcher = threading.Thread(target=sample, daemon=True)
        watcher.start()
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        output = child.stdout.read()
        watcher.join(timeout=1)
        seconds = time.time() - t0
        print("  " + output.strip().replace("\n", "\n  "))
        if child.returncode != 0:
            raise SystemExit(f"the converter failed (exit {child.returncode})")
        ckpt = [f for f in os.listdir(out_dir) if f.endswith(".ckpt")][0]
        out_bytes = os.path.getsize(os.path.join(out_dir, ckpt))
        # kilobytes on Linux.  A child's ru_maxrss starts from its parent's RSS at fork time;
        # this script holds one tensor at most, so that floor is small (printed below).
        peak = usage.ru_maxrss * 1024
        print()
        print(f"input   {_gb(os.path.getsize(src))} ({in_dtype})")
        print(f"output  {_gb(out_bytes)} (--dtype {args.out_dtype})")
        print(f"time    {seconds:.0f} s")
        print(f"peak RSS of the converter: {_gb(peak)} = {peak / out_bytes:.3f} x the output size "
              f"(target <= 1.5 x; sampled from /proc: {_gb(sampled[0])}; this script's own peak: {_gb(own)})")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True) if args.work_dir is None else (
                os.path.exists(src) and os.remove(src), shutil.rmtree(out_dir, ignore_errors=True))


if __name__ == "__main__":
    main()
