"""MindSpore's Conv2D/Conv3D kernels, the project's CPU convolution kernel and the gather + matmul
path, shape by shape.

Times every distinct convolution shape of the full-size SVD UNet (one CFG batch of 2 x --frames
frames at --size pixels) and of the temporal VAE decoder (--frames frames), each path in its own
cell (graph mode; --pynative for PyNative), and prints a table with GFLOP/s per path and the path
the layer takes on this device. This is the measurement behind `policy.conv_implementation` and
the layers' size rules for the CPU kernel (`layers.CONV_KERNEL_MIN_WORK`,
`TEMPORAL_KERNEL_MIN_POSITIONS`); "kernel" is "-" where the layer would not take it.

    python -m benchmarks.conv_paths                       # 14 frames, 256x256 (~5 min on 2 cores)
    python -m benchmarks.conv_paths --frames 4 --size 128 --pynative
"""
import argparse
import os

import numpy as np

from benchmarks.common import best_time


def shapes(frames: int, size: int):
    """(label, dims, batch, cin, cout, kernel, stride, padding, spatial) for the SVD UNet
    (model_channels 320, channel_mult 1,2,4,4) and temporal VAE decoder (ch 128, ch_mult 1,2,4,4)."""
    n, h = 2 * frames, size // 8
    unet = [
        ("UNet conv_in", 2, n, 8, 320, 3, 1, 1, (h, h)),
        ("UNet res 320", 2, n, 320, 320, 3, 1, 1, (h, h)),
        ("UNet res 640->320 (decoder)", 2, n, 640, 320, 3, 1, 1, (h, h)),
        ("UNet skip 1x1 640->320", 2, n, 640, 320, 1, 1, 0, (h, h)),
        ("UNet downsample 320", 2, n, 320, 320, 3, 2, 1, (h, h)),
        ("UNet res 640", 2, n, 640, 640, 3, 1, 1, (h // 2, h // 2)),
        ("UNet res 1280", 2, n, 1280, 1280, 3, 1, 1, (h // 4, h // 4)),
        ("UNet res 2560->1280 (decoder)", 2, n, 2560, 1280, 3, 1, 1, (h // 8, h // 8)),
        ("UNet res 1280 lowest", 2, n, 1280, 1280, 3, 1, 1, (h // 8, h // 8)),
        ("UNet temporal (3,1,1) 320", 3, 2, 320, 320, (3, 1, 1), 1, (1, 0, 0), (frames, h, h)),
        ("UNet temporal (3,1,1) 640", 3, 2, 640, 640, (3, 1, 1), 1, (1, 0, 0), (frames, h // 2, h // 2)),
        ("UNet temporal (3,1,1) 1280", 3, 2, 1280, 1280, (3, 1, 1), 1, (1, 0, 0), (frames, h // 4, h // 4)),
    ]
    t = frames
    vae = [
        ("VAE res 512 (latent size)", 2, t, 512, 512, 3, 1, 1, (h, h)),
        ("VAE res 512 (x2)", 2, t, 512, 512, 3, 1, 1, (2 * h, 2 * h)),
        ("VAE res 256 (x4)", 2, t, 256, 256, 3, 1, 1, (4 * h, 4 * h)),
        ("VAE res 128 (x8)", 2, t, 128, 128, 3, 1, 1, (8 * h, 8 * h)),
        ("VAE conv_out 128->3", 2, t, 128, 3, 3, 1, 1, (8 * h, 8 * h)),
        ("VAE temporal (3,1,1) 256 (x4)", 3, 1, 256, 256, (3, 1, 1), 1, (1, 0, 0), (t, 4 * h, 4 * h)),
        ("VAE temporal (3,1,1) 128 (x8)", 3, 1, 128, 128, (3, 1, 1), 1, (1, 0, 0), (t, 8 * h, 8 * h)),
    ]
    return unet + vae


def conv_flops(n, cin, cout, kernel, stride, padding, spatial):
    kernel = kernel if isinstance(kernel, tuple) else (kernel,) * len(spatial)
    padding = padding if isinstance(padding, tuple) else (padding,) * len(spatial)
    out = [(s + 2 * p - k) // stride + 1 for s, k, p in zip(spatial, kernel, padding)]
    return 2.0 * n * cin * cout * int(np.prod(kernel)) * int(np.prod(out))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=14)
    ap.add_argument("--size", type=int, default=256, help="square frame size in pixels (multiple of 64)")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per path; the best is reported")
    ap.add_argument("--pynative", action="store_true", help="PyNative mode (the CPU default) instead of graph mode")
    args = ap.parse_args()
    import mindspore as ms
    from mindspore import nn

    from svd_ms import policy
    from svd_ms.modules import layers
    from svd_ms.runtime import setup_device
    setup_device(os.environ.get("SVD_MS_DEVICE", "CPU"), mode=1 if args.pynative else 0)

    class Run(nn.Cell):
        def __init__(self, conv):
            super().__init__()
            self.conv = conv

        def construct(self, x):
            return self.conv(x)

    rng = np.random.default_rng(0)
    print(f"device {policy.device_target()}, {'PyNative' if args.pynative else 'graph'} mode, {args.frames} frames "
          f"at {args.size}x{args.size}, best of {args.repeats}")
    print("| convolution | input | native GFLOP/s | kernel GFLOP/s | kernel / native time | matmul GFLOP/s | "
          "matmul / native time | the layer takes |")
    print("|---|---|---|---|---|---|---|---|")
    totals = {"native": 0.0, "kernel": 0.0, "matmul": 0.0, "policy": 0.0}
    for label, dims, n, cin, cout, kernel, stride, padding, spatial in shapes(args.frames, args.size):
        x = ms.Tensor(rng.standard_normal((n, cin) + spatial, dtype=np.float32))
        flop = conv_flops(n, cin, cout, kernel, stride, padding, spatial)
        seconds = {}
        built = layers.conv_nd(dims, cin, cout, kernel, stride=stride, padding=padding)
        takes_kernel = built.kernel is not None and built.kernel_fits(tuple(x.shape))
        for path in ("native", "kernel", "matmul"):
            if path == "kernel" and not takes_kernel:
                continue
            conv = layers.conv_nd(dims, cin, cout, kernel, stride=stride, padding=padding)
            conv.implementation = "matmul" if path == "matmul" else "native"
            if path != "kernel":
                conv.kernel = None
            run = Run(conv)
            seconds[path] = best_time(lambda: run(x).asnumpy(), args.repeats)
            totals[path] += seconds[path]
        choice = "kernel" if takes_kernel else policy.conv_implementation()
        totals["policy"] += seconds[choice]
        kernel_cells = (f"{flop / seconds['kernel'] / 1e9:.1f} | {seconds['kernel'] / seconds['native']:.2f}"
                        if takes_kernel else "- | -")
        print(f"| {label} | {n}x{cin}x{'x'.join(map(str, spatial))} | {flop / seconds['native'] / 1e9:.1f} | "
              f"{kernel_cells} | {flop / seconds['matmul'] / 1e9:.1f} | {seconds['matmul'] / seconds['native']:.2f} | "
              f"{choice} |", flush=True)
    print(f"\nsum over the shapes above (one of each): native {totals['native']:.2f} s, matmul "
          f"{totals['matmul']:.2f} s, what the layers take {totals['policy']:.2f} s "
          f"(kernel {totals['kernel']:.2f} s where taken)")


if __name__ == "__main__":
    main()
