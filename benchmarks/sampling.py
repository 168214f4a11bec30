"""Time of one video per sampling setting: what skipping the unconditional copy saves when the
guidance scale is 1 on every frame, and what the 4-step consistency sampler saves over Euler.

Settings (one pipeline, the sampler swapped with use_sampler; each video generated --repeats
times after one warm-up run that also pays graph compilation):
  guided-1       Euler, linear guidance 1.0 -> 1.0, both copies kept (UNet batch 2T)
  unguided-1     the same config with the shortcut: the UNet sees the conditional batch only (T)
  guided         Euler with the config's guider (e.g. linear 1.0 -> 2.5), --steps steps
  lcm            the consistency sampler, --lcm_steps steps, AnimateLCM's guidance 1.0 -> 1.2

    python -m benchmarks.sampling                                  # tiny reference model, 256x384, 5 frames
    python -m benchmarks.sampling --config configs/svd_xt.yaml --checkpoint svd_xt.safetensors \\
        --size 576x1024 --frames 25 --steps 25 --settings guided,unguided-1,lcm
"""
import argparse
import copy
import json
import os
import time

import numpy as np

from benchmarks.common import reference_dir


def sampler_configs(base, steps: int, lcm_steps: int):
    from omegaconf import OmegaConf

    from svd_ms.sampling_options import apply_sampling_options
    base = OmegaConf.to_container(base, resolve=True)
    euler = apply_sampling_options(base, sampler="euler")
    one = apply_sampling_options(euler, guider="linear", min_guidance_scale=1.0, max_guidance_scale=1.0)
    return {
        "guided-1": (one, steps, False),
        "unguided-1": (one, steps, True),
        "guided": (copy.deepcopy(euler), steps, True),
        "lcm": (apply_sampling_options(base, sampler="lcm"), lcm_steps, True),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=None, help="model config (default: the reference tiny_svd.sgm.yaml)")
    parser.add_argument("--checkpoint", default=None, help="weights (default: the reference tiny_svd.safetensors)")
    parser.add_argument("--size", default="256x384", help="HxW")
    parser.add_argument("--frames", type=int, default=5)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--lcm_steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--mode", choices=("graph", "pynative"), default="graph")
    parser.add_argument("--settings", default="guided-1,unguided-1,guided,lcm")
    parser.add_argument("--device_target", default="CPU")
    args = parser.parse_args(argv)
    args.config = args.config or os.path.join(reference_dir(), "tiny_svd.sgm.yaml")
    args.checkpoint = args.checkpoint or os.path.join(reference_dir(), "tiny_svd.safetensors")

    from omegaconf import OmegaConf

    from svd_ms.pipeline import SVDInferPipeline
    from svd_ms.runtime import setup_device

    setup_device(args.device_target, mode=0 if args.mode == "graph" else 1)
    h, w = (int(v) for v in args.size.split("x"))
    pipe = SVDInferPipeline(args.config, args.checkpoint, num_frames=args.frames, decode_chunk_size=args.frames,
                            num_steps=args.steps)
    configs = sampler_configs(OmegaConf.load(args.config).model.params.sampler_config, args.steps, args.lcm_steps)
    rng = np.random.default_rng(0)
    image = rng.uniform(-1, 1, (1, 3, h, w)).astype(np.float32)
    results = {}
    videos = {}
    for name in args.settings.split(","):
        config, steps, skip = configs[name]
        pipe.use_sampler(config, num_steps=steps, skip_unused_copies=skip)
        pipe.generate(image, seed=0)  # warm-up: compiles the step for this guider
        times, steps_s = [], []
        for _ in range(args.repeats):
            start = time.perf_counter()
            result = pipe.generate(image, seed=0)
            videos[name] = result.video
            times.append(time.perf_counter() - start)
            steps_s.append(float(np.median(result.timings["step_s"])))
        results[name] = {"steps": steps, "unet_batch": pipe.guider.num_copies * args.frames,
                         "video_s": float(np.median(times)), "sampling_step_s": float(np.median(steps_s)),
                         "sampling_s": result.timings["sampling_s"]}
        print(name, json.dumps(results[name]), flush=True)
    if "guided-1" in videos and "unguided-1" in videos:
        diff = float(np.abs(videos["guided-1"] - videos["unguided-1"]).max())
        saved = 1 - results["unguided-1"]["sampling_s"] / results["guided-1"]["sampling_s"]
        print(f"scale-1 shortcut: video max_abs difference {diff:.2e}; sampling time saved {saved:.0%}")
    print(json.dumps({"args": vars(args), "results": results}))


if __name__ == "__main__":
    main()
