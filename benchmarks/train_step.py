"""Fine-tuning step time and peak memory.

Measured: the tiny reference model (../shared/reference/tiny_svd.*) on this machine's device
(CPU here), one child process per variant so that each peak resident set size (ru_maxrss) is
that variant's alone. Each child writes a few synthetic mp4 clips, builds the Trainer, runs
`--warmup` steps and then `--steps` timed steps through Trainer.train_step (data decoding,
VAE encoding, conditioning, forward/backward, optimizer), and reports the median.

Projected, NOT measured: the full-size models (configs/svd.yaml, svd_xt.yaml): parameter
counts from the configs, training-state memory (float32 weights, gradients, AdamW moments,
EMA) and FLOPs per step from benchmarks/flops.py; times only at an assumed sustained
throughput (--assume_tflops). Activation memory is not projected. LoRA (rank --lora_rank on the
attention projections, adapters attached to the unallocated full-size UNet) adds its adapter
file size (float32 down + up tensors); its FLOPs are counted as full fine-tuning's (the
backward pass still runs through the frozen UNet; the adapters add under 1%).

    python -m benchmarks.train_step                      # all variants, 4 frames at 128x192
    python -m benchmarks.train_step --variants fp32 --frames 2 --height 64 --width 64
    python -m benchmarks.train_step --json results.json

Not a test: it takes minutes.
"""
import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time

from benchmarks import common
from benchmarks.common import REPO
from benchmarks.common import reference_dir as _ref_dir

VARIANTS = {
    "fp32": {"precision": "fp32"},
    "fp32-temporal": {"precision": "fp32", "trainable": "temporal"},
    "fp32-lora": {"precision": "fp32", "trainable": "lora", "lora": {"rank": 16, "targets": ["attn"]}},
    "fp32-recompute": {"precision": "fp32", "recompute": True},
    "fp16": {"precision": "fp16"},
}


def _write_clips(folder, count, frames, height, width):
    import imageio
    import numpy as np

    rows = ["path"]
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    for i in range(count):
        clip = [(np.stack([0.5 + 0.5 * np.sin((xx + 4 * t + i) / 11.0), 0.5 + 0.5 * np.cos((yy - 3 * t) / 7.0),
                           np.full_like(xx, 0.3 + 0.1 * i)], -1) * 255).astype(np.uint8) for t in range(frames)]
        imageio.mimwrite(os.path.join(folder, f"clip{i}.mp4"), clip, fps=8, codec="libx264", macro_block_size=16)
        rows.append(f"clip{i}.mp4")
    with open(os.path.join(folder, "clips.csv"), "w") as f:
        f.write("\n".join(rows) + "\n")


def child(args):
    """Runs in the child process: one variant, prints one JSON line."""
    import numpy as np

    from svd_ms.runtime import setup_device
    from svd_ms.training.trainer import Trainer, load_train_config

    ref = _ref_dir()
    setup_device("CPU", mode=1)
    variant = dict(VARIANTS[args.variant])
    if "lora" in variant:
        variant["lora"] = {**variant["lora"], "rank": args.lora_rank}
    with tempfile.TemporaryDirectory() as tmp:
        _write_clips(tmp, 2 * args.batch_size, args.frames, args.height, args.width)
        train = {"checkpoint": os.path.join(ref, "tiny_svd.safetensors"), "output_dir": os.path.join(tmp, "out"),
                 "max_steps": args.warmup + args.steps, "batch_size": args.batch_size, "save_every": 10 ** 6,
                 "log_every": 10 ** 6, **variant}
        cfg = load_train_config({"base": os.path.join(ref, "tiny_svd.sgm.yaml"), "train": train,
                                 "data": {"csv": os.path.join(tmp, "clips.csv"), "root": tmp,
                                          "num_frames": args.frames, "frame_stride": 1, "height": args.height,
                                          "width": args.width}})
        start = time.perf_counter()
        trainer = Trainer(cfg, log=lambda msg: None)
        setup_s = time.perf_counter() - start
        times = []
        for i in range(args.warmup + args.steps):
            t0 = time.perf_counter()
            metrics = trainer.train_step()
            times.append(time.perf_counter() - t0)
            assert np.isfinite(metrics["loss"])
    timed = times[args.warmup:]
    print(json.dumps({
        "variant": args.variant, "setup_s": setup_s, "first_step_s": times[0],
        "step_s_median": statistics.median(timed), "step_s_all": timed,
        "videos_per_s": args.batch_size / statistics.median(timed),
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9,
        "trainable_params": int(sum(p.size for p in trainer.params)),
    }))


def projection(config, frames, height, width, assume_tflops, recompute, lora_rank=16):
    """Analytic figures for a full-size model: NOT measured."""
    from omegaconf import OmegaConf

    from benchmarks.flops import unet_step_flops
    from svd_ms.checkpoint import build_engine

    cfg = OmegaConf.load(config)
    engine = build_engine(cfg)  # parameters are unallocated zeros: builds in seconds
    unet = engine.model.diffusion_model
    all_params = sum(p.size for p in engine.get_parameters())
    out = {"config": os.path.relpath(config, REPO), "frames": frames, "height": height, "width": width}
    fwd = unet_step_flops(OmegaConf.to_container(cfg.model.params.network_config.params), frames, height // 8,
                          width // 8, batch=1)["total"]
    passes = 4 if recompute else 3  # forward + backward (2x) (+ forward again when recomputing)
    from svd_ms.lora import LoRASettings, adapter_parameters, attach_adapters

    base_unet = {id(p) for p in unet.get_parameters()}
    adapters = attach_adapters(unet, LoRASettings(rank=lora_rank, alpha=float(lora_rank)))
    lora_params = sum(p.size for p in adapter_parameters(adapters))
    for mode, tags in (("all", None), ("temporal", ("time_stack", "time_mixer", "time_pos_embed")), ("lora", ())):
        if mode == "lora":
            trainable = lora_params
        else:
            trainable = sum(p.size for p in unet.get_parameters()
                            if id(p) in base_unet and (tags is None or any(t in p.name for t in tags)))
        state = 4 * all_params + 4 * trainable * (1 + 2)  # fp32 weights; grads; AdamW m and v
        if mode == "lora":
            state += 4 * trainable  # the adapters themselves (all_params counts the base only)
        out[mode] = {"trainable_params": trainable,
                     "adapter_file_mb": 4 * trainable / 1e6 if mode == "lora" else None,
                     "state_gb_no_ema": state / 1e9,
                     "state_gb_with_ema": (state + 4 * trainable * 2) / 1e9,  # EMA copy + mindone's swap buffer
                     "unet_tflop_per_video_step": passes * fwd / 1e12,
                     f"step_s_per_video_at_{assume_tflops:g}_tflops": passes * fwd / (assume_tflops * 1e12)}
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--frames", type=int, default=4)
    p.add_argument("--height", type=int, default=128)
    p.add_argument("--width", type=int, default=192)
    p.add_argument("--batch_size", type=int, default=1)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--assume_tflops", type=float, default=100.0,
                   help="sustained device throughput assumed for the full-size projection")
    p.add_argument("--lora_rank", type=int, default=16, help="LoRA rank of the lora variant and projection")
    p.add_argument("--json", default=None, help="also write the results here")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        args.variant = args.child
        return child(args)

    results = {"measured_tiny": [], "projected_full_size_not_measured": []}
    for variant in args.variants:
        res = common.run_child("train_step", "--child", variant, "--frames", args.frames, "--height", args.height,
                               "--width", args.width, "--batch_size", args.batch_size, "--warmup", args.warmup,
                               "--steps", args.steps, "--lora_rank", args.lora_rank)
        lines = [line for line in res.stdout.splitlines() if line.startswith("{")]
        if res.returncode != 0 or not lines:
            print(f"{variant}: failed\n{res.stderr[-2000:]}", file=sys.stderr)
            continue
        r = json.loads(lines[-1])
        results["measured_tiny"].append(r)
        print(f"[measured] tiny {variant:15s} {args.batch_size}x{args.frames}x{args.height}x{args.width}: "
              f"step {r['step_s_median']:.2f} s (first {r['first_step_s']:.2f} s, setup {r['setup_s']:.1f} s), "
              f"{r['videos_per_s']:.2f} videos/s, peak RSS {r['peak_rss_gb']:.2f} GB, "
              f"{r['trainable_params']:,} trainable", flush=True)
    for config, frames in (("svd.yaml", 14), ("svd_xt.yaml", 25)):
        proj = projection(os.path.join(REPO, "configs", config), frames, 576, 1024, args.assume_tflops, True,
                          args.lora_rank)
        results["projected_full_size_not_measured"].append(proj)
        for mode in ("all", "temporal", "lora"):
            m = proj[mode]
            adapter = f", adapter file {m['adapter_file_mb']:.1f} MB" if m["adapter_file_mb"] else ""
            print(f"[projection, not measured] {config} {frames}x576x1024, trainable={mode}: "
                  f"{m['trainable_params'] / 1e9:.3f} B trainable{adapter}, "
                  f"training state {m['state_gb_no_ema']:.1f} GB "
                  f"({m['state_gb_with_ema']:.1f} GB with EMA) + activations, "
                  f"{m['unet_tflop_per_video_step']:.0f} TFLOP per video per step with recompute "
                  f"(~{m[f'step_s_per_video_at_{args.assume_tflops:g}_tflops']:.1f} s per video at an assumed "
                  f"{args.assume_tflops:g} TFLOP/s)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
