"""Where a PyNative UNet step's (or VAE decode's) time goes, by layer type, without a profiler.

MindSpore's profiler inflates PyNative op times (docs/profile_ops.md: the profiled UNet step took
8.2 s of op time where the unprofiled step takes ~7 s wall). With synchronous launch (the CPU
policy) each layer's call returns when its kernels are done, so wall time around `construct` is
the layer's cost. Times are inclusive: a FeedForward's includes its GEGLU's and Linears'.

Full-size SVD UNet with the benchmarks' random weights (benchmarks.bench), one CFG batch of 2
videos; or its temporal VAE decoding the frames as one clip. One untimed call, then one timed call.

    python -m benchmarks.layer_times                  # UNet step, 4 frames of 128x128, ~2 min
    python -m benchmarks.layer_times --part vae       # VAE decode of 4 frames of 128x128
    python -m benchmarks.layer_times --frames 14 --size 256
"""
import argparse
import collections
import contextlib
import time
from typing import Dict, Iterator, List


def vae_layer_types() -> Dict[str, type]:
    from svd_ms.modules import layers
    from svd_ms.modules.autoencoding import temporal_ae
    from svd_ms.modules.diffusionmodules import model
    return {
        "VideoResBlock (temporal VAE)": temporal_ae.VideoResBlock,
        "ResnetBlock (its 2-D part)": model.ResnetBlock,
        "VideoBlock (attention)": temporal_ae.VideoBlock,
        "Upsample": model.Upsample,
        "AE3DConv (output, temporal)": temporal_ae.AE3DConv,
        "Conv2d": layers.Conv2d,
        "Conv3d": layers.Conv3d,
        "GroupNorm": layers.GroupNorm,
    }


def layer_types() -> Dict[str, type]:
    from svd_ms.modules import attention, layers, video_attention
    from svd_ms.modules.diffusionmodules import openaimodel, video_model
    return {
        "SpatialVideoTransformer": video_attention.SpatialVideoTransformer,
        "VideoTransformerBlock": video_attention.VideoTransformerBlock,
        "BasicTransformerBlock": attention.BasicTransformerBlock,
        "VideoResBlock": video_model.VideoResBlock,
        "ResBlock (its 2-D part)": openaimodel.ResBlock,
        "CrossAttention": attention.CrossAttention,
        "FeedForward": attention.FeedForward,
        "GEGLU": attention.GEGLU,
        "GELU": layers.GELU,
        "Linear": layers.Linear,
        "Conv2d": layers.Conv2d,
        "Conv3d": layers.Conv3d,
        "GroupNorm": layers.GroupNorm,
        "LayerNorm": layers.LayerNorm,
        "SiLU": layers.SiLU,
    }


@contextlib.contextmanager
def timed_layers(types: Dict[str, type]) -> Iterator[Dict[str, List[float]]]:
    """Wrap each class's `construct` to add [calls, seconds] under its name; restored on exit.
    A subclass listed separately counts in both (VideoResBlock calls ResBlock's construct)."""
    stats: Dict[str, List[float]] = collections.defaultdict(lambda: [0, 0.0])
    originals = {cls: cls.__dict__["construct"] for cls in types.values() if "construct" in cls.__dict__}

    def wrapped(name, construct):
        def construct_timed(self, *args, **kwargs):
            start = time.perf_counter()
            try:
                return construct(self, *args, **kwargs)
            finally:
                stats[name][0] += 1
                stats[name][1] += time.perf_counter() - start
        return construct_timed
    try:
        for name, cls in types.items():
            if cls in originals:
                cls.construct = wrapped(name, originals[cls])
        yield stats
    finally:
        for cls, construct in originals.items():
            cls.construct = construct


def report(stats: Dict[str, List[float]], step_s: float, what: str = "UNet step") -> str:
    lines = [f"{what} {step_s:.2f} s (PyNative, inclusive times per layer type)", "",
             "| layer | calls | seconds | share of the step |", "|---|---|---|---|"]
    for name, (calls, seconds) in sorted(stats.items(), key=lambda item: -item[1][1]):
        lines.append(f"| {name} | {int(calls)} | {seconds:.3f} | {seconds / step_s:.1%} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--part", choices=("unet", "vae"), default="unet")
    args = parser.parse_args(argv)
    from benchmarks import bench
    if args.part == "vae":
        args.vae_frames = args.frames
        call, types, what = bench.vae_ours(args, "pynative"), vae_layer_types(), "VAE decode"
    else:
        call, types, what = bench.unet_ours(args, "pynative")[0], layer_types(), "UNet step"
    call()
    with timed_layers(types) as stats:
        start = time.perf_counter()
        call()
        seconds = time.perf_counter() - start
    print(report(stats, seconds, what))


if __name__ == "__main__":
    main()
