"""Peak anonymous memory and time of loading weights into the engine, from the .ckpt the
converter writes and from the .safetensors it was converted from.

Random weights with every name and shape of the real checkpoint (the manifest in
../shared/reference/manifest/) are written as a float32 .safetensors, converted with
svd_tools.convert, and each file is then loaded by load_checkpoint_into in a fresh process that
samples its own RssAnon from /proc every 20 ms. RssAnon leaves out the file's pages in the page
cache (which the kernel can drop at any time), so it is the memory a load really needs. The
peak includes MindSpore's own runtime (about 0.2 GB, which dominates the tiny model's ratio);
"load delta" is the peak minus the RssAnon of the built, empty engine.

    python -m benchmarks.load_memory                      # full-size configs/svd_xt.yaml (~19 GB disk)
    python -m benchmarks.load_memory --load_dtype fp16    # every parameter stored in float16
    python -m benchmarks.load_memory --tiny               # the tiny reference model, in seconds

Run from the repository root (or after `pip install -e .`). The full size needs about 10 GB of
free memory and 20 GB of free disk; not a test: it takes minutes.
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

from benchmarks import common
from benchmarks.common import REPO, proc_status_kb
from benchmarks.common import gb as _gb
from benchmarks.common import reference_dir as _ref_dir


def _rss_anon() -> int:
    return proc_status_kb("RssAnon") * 1024


def child(config: str, path: str, load_dtype: str) -> None:
    """Build the engine, load `path` into it, print one JSON line of measurements."""
    import mindspore as ms

    from svd_ms.checkpoint import build_engine, load_checkpoint_into

    peak = [_rss_anon()]
    running = [True]

    def sample():
        while running[0]:
            peak[0] = max(peak[0], _rss_anon())
            time.sleep(0.02)

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    t0 = time.time()
    engine = build_engine(config)
    built, before = time.time(), _rss_anon()
    dtype = {"fp32": None, "fp16": ms.float16}[load_dtype]
    load_checkpoint_into(engine, path, dtype=dtype)
    loaded = time.time()
    running[0] = False
    watcher.join()
    peak[0] = max(peak[0], _rss_anon())
    weights = sum(int(np.prod(p.shape, dtype=np.int64)) * (2 if p.dtype in (ms.float16, ms.bfloat16) else 4)
                  for p in engine.get_parameters())
    print(json.dumps({"build_s": built - t0, "load_s": loaded - built, "anon_before_load": before,
                      "anon_peak": peak[0], "anon_after": _rss_anon(), "weights": weights}))


def _measure(config, path, load_dtype):
    env = dict(os.environ, GLOG_v="3", PYTHONWARNINGS="ignore")
    r = common.run_child("load_memory", "--child", path, "--config", config, "--load_dtype", load_dtype, env=env)
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
    if r.returncode != 0 or not lines:
        tail = (r.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise SystemExit(f"loading {path} failed (exit {r.returncode}): {tail}")
    return json.loads(lines[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=os.path.join(REPO, "configs", "svd_xt.yaml"))
    p.add_argument("--manifest", default="svd.keys.json", help="manifest file name (or path)")
    p.add_argument("--ckpt_dtype", choices=["keep", "fp32", "fp16"], default="keep",
                   help="--dtype of the conversion (the random input is float32)")
    p.add_argument("--load_dtype", choices=["fp32", "fp16"], default="fp32",
                   help="dtype the parameters are loaded in (fp16: every parameter, to show the per-tensor cast)")
    p.add_argument("--tiny", action="store_true", help="the tiny reference model and weights instead")
    p.add_argument("--work_dir", default=None, help="temporary files (default: a new folder in /tmp)")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args.config, args.child, args.load_dtype)

    work = args.work_dir or tempfile.mkdtemp(prefix="svd_load_memory_", dir="/tmp")
    os.makedirs(work, exist_ok=True)
    try:
        if args.tiny:
            config = os.path.join(_ref_dir(), "tiny_svd.sgm.yaml")
            src = os.path.join(_ref_dir(), "tiny_svd.safetensors")
        else:
            config = args.config
            src = os.path.join(work, "svd_random.safetensors")
            _write_random(args.manifest, src, work)
        out_dir = os.path.join(work, "out")
        t0 = time.time()
        cmd = [sys.executable, "-m", "svd_tools.convert", "--pt_weights_file", src, "--config", config,
               "--out_dir", out_dir, "--dtype", args.ckpt_dtype, "--force"]
        r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit(f"conversion failed: {r.stderr.strip()}")
        ckpt = os.path.join(out_dir, os.path.splitext(os.path.basename(src))[0] + ".ckpt")
        print(f"converted in {time.time() - t0:.0f} s: {ckpt} ({_gb(os.path.getsize(ckpt))})", flush=True)

        print(f"\nconfig {os.path.relpath(config, REPO) if not args.tiny else 'tiny_svd.sgm.yaml'}, "
              f"parameters loaded as {args.load_dtype}; RssAnon (page cache not counted)")
        print(f"{'file':<14}{'size':>10}{'build s':>9}{'load s':>8}{'weights':>10}{'peak anon':>11}"
              f"{'peak/weights':>14}{'load delta/weights':>20}")
        for label, path in ((".ckpt", ckpt), (".safetensors", src)):
            m = _measure(config, path, args.load_dtype)
            print(f"{label:<14}{_gb(os.path.getsize(path)):>10}{m['build_s']:>9.1f}{m['load_s']:>8.1f}"
                  f"{_gb(m['weights']):>10}{_gb(m['anon_peak']):>11}{m['anon_peak'] / m['weights']:>14.3f}"
                  f"{(m['anon_peak'] - m['anon_before_load']) / m['weights']:>20.3f}",
                  flush=True)
    finally:
        if args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)


def _write_random(manifest, src, work):
    from svd_tools.safetensors_stream import write_safetensors

    manifest = manifest if os.path.isfile(manifest) else os.path.join(_ref_dir(), "manifest", manifest)
    with open(manifest) as f:
        shapes = {k: tuple(v) for k, v in json.load(f).items()}
    n_bytes = 4 * sum(int(np.prod(s, dtype=np.int64)) for s in shapes.values())
    if shutil.disk_usage(work).free < 2.1 * n_bytes:
        raise SystemExit(f"need about {_gb(2.1 * n_bytes)} free in {work}")
    rng = np.random.default_rng(0)

    def produce(name):
        a = rng.standard_normal(int(np.prod(shapes[name], dtype=np.int64)), dtype=np.float32)
        a *= 0.02
        return a.reshape(shapes[name])

    t0 = time.time()
    write_safetensors(src, [(k, "float32", s) for k, s in shapes.items()], produce)
    print(f"wrote {len(shapes)} random float32 tensors ({_gb(os.path.getsize(src))}) in {time.time() - t0:.0f} s",
          flush=True)


if __name__ == "__main__":
    main()
