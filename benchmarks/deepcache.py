"""What DeepCache buys and costs: time per video with and without the feature cache, and how far
the cached video moves from the uncached one.

One process builds the full-size SVD model (configs/svd.yaml) with random weights and, for each
sampler, makes the uncached video and then the cached ones (cache_interval 2, 3, 5 by default,
cache_branch 0), all with the same image and seed:
  euler   the config's Euler sampler and guidance, 25 steps
  lcm     the 4-step consistency sampler (AnimateLCM's sampler and guidance)
Each setting runs once untimed with --warmup_steps steps (graph compilation of the full and the
shallow UNet step, and the decoder) and then --repeats times timed; the table gives the median
seconds per video, the speed-up over the uncached video of the same sampler, and the cached
video's max and mean absolute difference and PSNR against it (frames in [0, 1]).

RANDOM WEIGHTS MEASURE THE CHANGE, NOT THE QUALITY: a difference or PSNR here says how far the
cache moves this untrained model's output; what the cache does to real videos is the DeepCache
paper's claim (Ma et al., CVPR 2024), not ours.

    python -m benchmarks.deepcache --quick    # 4 frames of 128x128
    python -m benchmarks.deepcache --mode pynative --warmup_steps 0
        # 14 frames of 256x256: about 2 h 10 min on 2 CPU cores, PyNative (graph mode does not fit
        # this size in 24 GB yet; PyNative compiles nothing, so no warm-up run)
"""
import argparse
import json
import math
import os
import platform
import sys
import time

import numpy as np

from benchmarks import common
from benchmarks.common import REPO, gb, peak_rss_bytes

CONFIG = os.path.join(REPO, "configs", "svd.yaml")
SAMPLERS = {"euler": 25, "lcm": 4}  # sampler -> steps
NOTE = ("Random weights measure the change the cache makes, not the quality of a video; the quality claim "
        "stays the DeepCache paper's.")


def difference(video: np.ndarray, reference: np.ndarray) -> dict:
    """Max and mean absolute difference and PSNR (dB, peak 1) of `video` against `reference`, both in [0, 1];
    PSNR is inf for equal videos."""
    diff = np.abs(np.asarray(video, np.float64) - np.asarray(reference, np.float64))
    mse = float(np.mean(diff ** 2))
    return {"max_abs": float(diff.max()), "mean_abs": float(diff.mean()),
            "psnr_db": math.inf if mse == 0 else 10 * math.log10(1.0 / mse)}


def host_cpu() -> str:
    """The CPU model from /proc/cpuinfo and the cores this process may use."""
    model = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    except OSError:
        pass
    return f"{model}, {len(os.sched_getaffinity(0))} cores"


def run_setting(pipe, image, sampler: str, steps: int, cache: dict, warmup_steps: int, repeats: int):
    """(median seconds per video, median sampling seconds, the video) for one sampler and cache setting."""
    settings = dict(sampler=sampler, **cache)
    if warmup_steps:  # PyNative compiles nothing, so 0 skips a warm-up video's encode and decode
        pipe.generate(image, seed=0, num_steps=min(warmup_steps, steps), **settings)
    times, sampling = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        result = pipe.generate(image, seed=0, num_steps=steps, **settings)
        times.append(time.perf_counter() - start)
        sampling.append(result.timings["sampling_s"])
    return float(np.median(times)), float(np.median(sampling)), result.video


def measure(pipe, image, samplers: dict, intervals, branch: int, warmup_steps: int, repeats: int) -> list:
    rows = []
    for sampler, steps in samplers.items():
        video_s, sampling_s, reference = run_setting(pipe, image, sampler, steps, {"cache": "none"}, warmup_steps,
                                                     repeats)
        base = {"sampler": sampler, "steps": steps}
        rows.append({**base, "cache": "none", "video_s": video_s, "sampling_s": sampling_s, "speedup": 1.0,
                     **difference(reference, reference)})
        print(json.dumps(rows[-1]), flush=True)
        for interval in intervals:
            cache = {"cache": "deepcache", "cache_interval": interval, "cache_branch": branch}
            s, sampling, video = run_setting(pipe, image, sampler, steps, cache, warmup_steps, repeats)
            rows.append({**base, **cache, "video_s": s, "sampling_s": sampling, "speedup": video_s / s,
                         **difference(video, reference)})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def report(args, rows, command: str) -> str:
    lines = [f"DeepCache: {args.frames} frames of {args.size}x{args.size}, full-size SVD ({os.path.relpath(CONFIG, REPO)})"
             f" with random weights, {args.mode} mode, cache_branch {args.branch}, median of {args.repeats} timed "
             f"run(s) after one warm-up of {args.warmup_steps} steps",
             f"command: {command}",
             f"host: {host_cpu()}; peak memory {gb(peak_rss_bytes())}",
             NOTE, "",
             "| sampler | steps | cache | interval | s / video | sampling s | speed-up | max abs diff | mean abs diff "
             "| PSNR dB |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        interval = r.get("cache_interval", "-")
        lines.append(f"| {r['sampler']} | {r['steps']} | {r['cache']} | {interval} | {r['video_s']:.1f} | "
                     f"{r['sampling_s']:.1f} | {r['speedup']:.2f}x | {r['max_abs']:.3g} | {r['mean_abs']:.3g} | "
                     f"{r['psnr_db']:.1f} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog=NOTE, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="4 frames of 128x128 instead of 14 of 256x256")
    parser.add_argument("--frames", type=int, default=None)
    parser.add_argument("--size", type=int, default=None, help="square frame side, a multiple of 64")
    parser.add_argument("--intervals", default="2,3,5", help="cache_interval values, comma-separated")
    parser.add_argument("--branch", type=int, default=0, help="cache_branch")
    parser.add_argument("--samplers", default=",".join(SAMPLERS), help=f"out of {','.join(SAMPLERS)}")
    parser.add_argument("--warmup_steps", type=int, default=2,
                        help="steps of the untimed run per setting (2 compile both the full and the cached step; "
                             "0: no warm-up run, for PyNative)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--mode", choices=("graph", "pynative"), default="graph")
    parser.add_argument("--json", default=None, help="also write the rows and the report here")
    args = parser.parse_args(argv)
    args.frames = args.frames or (4 if args.quick else 14)
    args.size = args.size or (128 if args.quick else 256)
    if args.size % 64:
        parser.error("--size must be a multiple of 64")
    samplers = {}
    for name in args.samplers.split(","):
        if name not in SAMPLERS:
            parser.error(f"unknown sampler {name!r}: choose from {', '.join(SAMPLERS)}")
        samplers[name] = SAMPLERS[name]
    try:
        intervals = [int(v) for v in args.intervals.split(",")]
    except ValueError:
        parser.error(f"--intervals must be whole numbers, got {args.intervals!r}")
    os.environ.setdefault("GLOG_v", "3")

    from svd_ms.pipeline import SVDInferPipeline
    from svd_ms.runtime import setup_device

    setup_device("CPU", mode=0 if args.mode == "graph" else 1)
    pipe = SVDInferPipeline(CONFIG, None, num_frames=args.frames, decode_chunk_size=args.frames)
    image = np.random.default_rng(0).integers(0, 256, (args.size, args.size, 3), dtype=np.uint8)
    rows = measure(pipe, image, samplers, intervals, args.branch, args.warmup_steps, args.repeats)
    text = report(args, rows, "python -m benchmarks.deepcache " + " ".join(sys.argv[1:] if argv is None else argv))
    print("\n" + text, flush=True)
    common.write_json_report(args.json, args, text, rows=rows)


if __name__ == "__main__":
    main()
