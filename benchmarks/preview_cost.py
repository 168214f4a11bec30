"""What a live preview at every sampling step costs a run (issue 26: at most 5 %).

One process builds one model and makes the same video (same image, seed and settings) again and
again, alternating two step callbacks: one that only counts steps (what the page's progress bar
needs anyway) and one that also turns the step's denoised estimate into preview frames, a strip
of them and a PNG of the strip (svd_ms.app.preview; the PNG is what the page sends a browser).
Runs alternate, so that a busy neighbour on a shared machine slows both kinds alike. Printed:
the median seconds per video with and without previews, their ratio, and the preview work's own
time per step against the median step time (the steadier figure where the host is shared).

    python -m benchmarks.preview_cost                       # the tiny reference model (a pessimistic case:
                                                            # its steps are so cheap that any overhead shows)
    python -m benchmarks.preview_cost --config configs/svd.yaml --frames 4 --width 128 --height 128 --steps 4
"""
import argparse
import io
import os
import statistics
import time

import numpy as np

from benchmarks.common import reference_dir

BOUND = 1.05


class PreviewingCallback:
    """A step callback; with `preview` on it makes what the page shows at each sampling step and
    adds the time that took to `preview_s`."""

    def __init__(self, preview: bool):
        self.preview = preview
        self.steps = 0
        self.preview_s = 0.0
        self.last_strip = None

    def __call__(self, info) -> None:
        if info.stage != "sampling":
            return
        self.steps += 1
        if not self.preview:
            return
        from PIL import Image

        from svd_ms.app.preview import preview_frames, preview_strip
        t0 = time.perf_counter()
        strip = preview_strip(preview_frames(info.denoised))
        Image.fromarray(strip).save(io.BytesIO(), format="png")
        self.last_strip = strip
        self.preview_s += time.perf_counter() - t0


def measure(pipe, image: np.ndarray, repeats: int, seed: int = 7) -> dict:
    """Alternating runs with and without previews, after one untimed warm-up run of each."""
    runs = {False: [], True: []}
    step_s, preview_per_step = [], []
    for r in range(repeats + 1):
        for preview in ((False, True) if r % 2 == 0 else (True, False)):
            callback = PreviewingCallback(preview)
            t0 = time.perf_counter()
            result = pipe.generate(image, seed=seed, callback=callback)
            took = time.perf_counter() - t0
            if r == 0:
                continue  # compiles and warms caches
            runs[preview].append(took)
            step_s.extend(result.timings["step_s"][1:] or result.timings["step_s"])
            if preview:
                preview_per_step.append(callback.preview_s / callback.steps)
                strip_shape = callback.last_strip.shape
    without, with_preview = statistics.median(runs[False]), statistics.median(runs[True])
    return {"without_s": without, "with_s": with_preview, "ratio": with_preview / without,
            "runs_without_s": runs[False], "runs_with_s": runs[True], "step_s": statistics.median(step_s),
            "preview_s_per_step": statistics.median(preview_per_step),
            "preview_share": statistics.median(preview_per_step) / statistics.median(step_s),
            "strip_shape": strip_shape}


def report(m: dict, what: str) -> str:
    verdict = "within" if m["ratio"] <= BOUND and m["preview_share"] <= BOUND - 1 else "OVER"
    return "\n".join([
        f"preview cost, {what}",
        f"  per video: {m['without_s']:.3f} s without previews, {m['with_s']:.3f} s with one every step "
        f"(medians of {len(m['runs_with_s'])}); ratio {m['ratio']:.4f}",
        f"  per step: preview {m['preview_s_per_step'] * 1e3:.2f} ms (frames, a {m['strip_shape'][1]}x"
        f"{m['strip_shape'][0]} strip, its PNG) vs sampling step {m['step_s'] * 1e3:.1f} ms: "
        f"{100 * m['preview_share']:.2f} %",
        f"  {verdict} the issue's bound of {100 * (BOUND - 1):.0f} %"])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.preview_cost", description=__doc__.split("\n")[0])
    ap.add_argument("--config", default=None, help="model config (default: the tiny reference model)")
    ap.add_argument("--checkpoint", default=None, help="weights (default: the tiny model's; random for --config)")
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--height", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=5, help="timed runs of each kind")
    args = ap.parse_args(argv)
    from svd_ms.pipeline import SVDInferPipeline
    from svd_ms.runtime import setup_device
    setup_device("CPU", mode=1)
    config, checkpoint = args.config, args.checkpoint
    if config is None:
        config = os.path.join(reference_dir(), "tiny_svd.sgm.yaml")
        checkpoint = checkpoint or os.path.join(reference_dir(), "tiny_svd.safetensors")
    pipe = SVDInferPipeline(config, checkpoint, num_frames=args.frames, num_steps=args.steps,
                            decode_chunk_size=args.frames)
    image = np.random.default_rng(0).integers(0, 256, (args.height, args.width, 3), dtype=np.uint8)
    m = measure(pipe, image, args.repeats)
    print(report(m, f"{os.path.basename(config)}, {args.frames} frames of {args.width}x{args.height}, "
                    f"{args.steps} steps, CPU PyNative"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
