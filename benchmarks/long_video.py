"""Memory of a long chained video against one clip (issue 15).

Each run is its own process: build the pipeline, reset the peak-RSS counter (Linux VmHWM), make
one video of --clips chained clips, read the peak. The model's own memory is reported apart
(the peak after building it), so the two numbers of interest are the growth per clip of the
generation peak and of the result (earlier clips' frames stay on the host as float32).

    python -m benchmarks.long_video                     # tiny untrained demo model, 1 vs 3 clips
    python -m benchmarks.long_video --clips 1,3,6 --frames 14 --height 576 --width 1024 \
        --config configs/svd.yaml --checkpoint checkpoints/svd.ckpt
"""
import argparse
import json
import os
import sys
import time

from benchmarks import common
from benchmarks.common import REPO


def child(args) -> None:
    os.environ.setdefault("GLOG_v", "3")
    import numpy as np

    from svd_ms.pipeline import SVDInferPipeline
    from svd_ms.runtime import PeakMemory, setup_device

    setup_device("CPU", mode=1)
    pipe = SVDInferPipeline(args.config, args.checkpoint, num_frames=args.frames, num_steps=args.steps,
                            decode_chunk_size=args.frames)
    memory = PeakMemory("CPU")
    model_peak = memory.read()["peak_host_bytes"]
    rng = np.random.default_rng(0)
    image = rng.uniform(-1, 1, (1, 3, args.height, args.width)).astype(np.float32)
    memory.reset()
    t0 = time.perf_counter()
    result = pipe.generate(image, seed=1, num_clips=args.child)
    seconds = time.perf_counter() - t0
    peak = memory.read()["peak_host_bytes"]
    print(json.dumps({"clips": args.child, "frames": int(result.video.shape[0]), "model_peak_bytes": model_peak,
                      "generation_peak_bytes": peak, "result_bytes": int(result.video.nbytes + result.frames.nbytes),
                      "seconds": seconds}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=os.path.join(REPO, "configs", "demo", "tiny_random.yaml"))
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--clips", default="1,3")
    parser.add_argument("--frames", type=int, default=6)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=384)
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args)
        return
    rows = []
    for n in (int(x) for x in args.clips.split(",")):
        out = common.run_child("long_video", "--child", n, *sys.argv[1:])
        out.check_returncode()
        out = out.stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    mib = 1 << 20
    print(f"{args.frames} frames of {args.width}x{args.height} per clip, {args.steps} steps, "
          f"{os.path.relpath(args.config, REPO)}")
    print("| clips | frames | model peak RSS | generation peak RSS | of which frames kept | time |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['clips']} | {r['frames']} | {r['model_peak_bytes'] / mib:.0f} MiB | "
              f"{r['generation_peak_bytes'] / mib:.0f} MiB | {r['result_bytes'] / mib:.1f} MiB | "
              f"{r['seconds']:.0f} s |")


if __name__ == "__main__":
    main()
