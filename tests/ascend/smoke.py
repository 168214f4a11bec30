"""The first-NPU smoke test (run by scripts/ascend_smoke.sh): the tiny upstream parity cases, then
one random-weight sampling step at full size, printing PASS/FAIL and seconds per step.

On an NPU it runs the real kernels. With --dry_run it runs on this CPU host through the kernel
contract doubles (kernel_contracts.py), the tiny model standing in for the full-size one, so that
the test suite exercises every line of it (tests/ascend/test_smoke.py).
"""
import argparse
import json
import os
import sys
import time

import numpy as np

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROOT = os.path.dirname(TESTS)
REFERENCE = os.environ.get("SVD_MS_REFERENCE", os.path.join(ROOT, "..", "shared", "reference"))
# tests/test_precision.py's bounds for a float16 video against the float32 upstream one.
FP16_VIDEO_BOUNDS = {"max_abs": 0.1, "mean_abs": 1e-2}


def _video_errors(video, expected):
    err = np.abs(np.asarray(video, np.float64) - np.asarray(expected, np.float64))
    return {"max_abs": float(err.max()), "mean_abs": float(err.mean())}


def parity_case(name: str, amp_level: str) -> dict:
    """One tiny upstream case through the public pipeline; errors against FP16_VIDEO_BOUNDS."""
    from svd_ms.pipeline import SVDInferPipeline
    settings = json.load(open(os.path.join(REFERENCE, f"{name}.json")))
    r = dict(np.load(os.path.join(REFERENCE, f"{name}.reference.npz")))
    kwargs = {"decode_chunk_size": settings.get("decoding_t", 3), "amp_level": amp_level}
    if name == "tiny_svd":
        kwargs.update(num_frames=5, fps=7, motion_bucket_id=127, noise_aug_strength=0.02, num_steps=4)
    start = time.perf_counter()
    pipe = SVDInferPipeline(os.path.join(REFERENCE, f"{name}.sgm.yaml"),
                            os.path.join(REFERENCE, f"{name}.safetensors"), **kwargs)
    video = pipe.generate(r["image"], latent_noise=r["randn"], cond_noise=r["cond_noise"]).video
    errors = _video_errors(video, r["video"])
    passed = bool(np.isfinite(video).all()) and all(errors[k] <= b for k, b in FP16_VIDEO_BOUNDS.items())
    return {"case": f"{name} {amp_level}", "pass": passed, "seconds": time.perf_counter() - start, **errors}


def random_weight_steps(config: str, frames: int, height: int, width: int, steps: int = 2) -> dict:
    """Sample `steps` steps with random weights at the given size (amp_level auto: the device's
    default); the last step's seconds is the steady-state time per step (the first compiles)."""
    from svd_ms.pipeline import SVDInferPipeline
    times = []
    last = [time.perf_counter()]

    def on_step(info):
        if info.stage == "sampling":
            now = time.perf_counter()
            times.append(now - last[0])
            last[0] = now
    pipe = SVDInferPipeline(config, None, num_frames=frames, num_steps=steps, decode_chunk_size=1)
    image = np.zeros((height, width, 3), np.uint8)
    last[0] = time.perf_counter()
    latents = pipe.generate(image, seed=0, output_type="latent", callback=on_step).latents
    passed = bool(np.isfinite(latents).all()) and len(times) == steps
    return {"case": f"random weights {frames}x{height}x{width}", "pass": passed,
            "seconds_per_step": times[-1] if times else None, "first_step_seconds": times[0] if times else None}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry_run", action="store_true", help="CPU, through the kernel contract doubles")
    parser.add_argument("--mode", type=int, default=0, help="0 graph (the NPU default), 1 PyNative")
    parser.add_argument("--config", default=os.path.join(ROOT, "configs", "svd.yaml"))
    parser.add_argument("--size", default="14x576x1024", help="frames x height x width of the random-weight step")
    parser.add_argument("--amp_levels", default="O2,O0", help="the parity cases' precisions, comma-separated")
    args = parser.parse_args(argv)
    frames, height, width = (int(v) for v in args.size.split("x"))
    from svd_ms.runtime import setup_device
    if args.dry_run:
        import pytest
        from ascend import kernel_contracts
        setup_device("CPU", mode=args.mode)
        patch = pytest.MonkeyPatch()
        kernel_contracts.install(patch)
    else:
        setup_device("Ascend", mode=args.mode)
    results = [parity_case("tiny_svd", level) for level in args.amp_levels.split(",")]
    results.append(random_weight_steps(args.config, frames, height, width))
    for result in results:
        status = "PASS" if result["pass"] else "FAIL"
        details = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in result.items() if k not in ("case", "pass"))
        print(f"{status} {result['case']}: {details}", flush=True)
    print(json.dumps({"ascend_smoke": results, "dry_run": args.dry_run}), flush=True)
    return 0 if all(r["pass"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
