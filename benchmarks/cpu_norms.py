"""GroupNorm and exact GELU on MindSpore's CPU backend against PyTorch, same process, same data
(`svd_ms.policy.composed_group_norm`, svd_ms/modules/composed_kernels.py; `policy.cpu_gelu_kernel`,
svd_ms/modules/cpu_kernels).

Rows: MindSpore's GroupNorm kernel, the composition the CPU policy uses, PyTorch's group_norm
on 8x128x128x128 (the size of the issue's figure); the exact GELU on 42 M values composed from
MindSpore's Erf kernel, through the project's ahead-of-time kernel, and PyTorch's; GEGLU's
gated GELU (value * gelu(gate) from the projection's two halves, 21 M outputs) as chunk views
with composed operators, as the one-pass kernel, and PyTorch's. Best of 3 after a warm-up,
PyNative; max abs error against PyTorch in float64.

    python -m benchmarks.cpu_norms          # ~1 min
"""
import argparse

import numpy as np

from benchmarks.common import time_calls


def best(fn, repeats=3):
    """The fastest of `repeats` timed calls after one untimed call."""
    return min(time_calls(fn, warmup=1, repeats=repeats)[2])


def main(argv=None):
    argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args(argv)  # --help; no options
    import mindspore as ms
    import torch
    from mindspore import mint, ops

    from svd_ms.modules.composed_kernels import group_norm_composed
    from svd_ms.modules.cpu_kernels import exact_gelu_op, gated_gelu_op
    from svd_ms.modules.layers import gelu
    from svd_ms.runtime import setup_device
    setup_device("CPU", mode=1)
    rng = np.random.default_rng(0)
    x = (1.0 + rng.standard_normal((8, 128, 128, 128))).astype(np.float32)
    w, b = rng.standard_normal(128).astype(np.float32), rng.standard_normal(128).astype(np.float32)
    xm, wm, bm = ms.Tensor(x), ms.Tensor(w), ms.Tensor(b)
    xt, wt, bt = torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b)
    truth = torch.nn.functional.group_norm(xt.double(), 32, wt.double(), bt.double(), 1e-6).numpy()
    bn = ops.BatchNorm(is_training=False, epsilon=1e-6)
    rows = [
        ("GroupNorm 32 groups, 8x128x128x128: MindSpore kernel",
         lambda: mint.nn.functional.group_norm(xm, 32, wm, bm, 1e-6).asnumpy()),
        ("GroupNorm: svd-ms composition (CPU policy)",
         lambda: group_norm_composed(xm, 32, wm, bm, 1e-6, bn).asnumpy()),
        ("GroupNorm: PyTorch", lambda: torch.nn.functional.group_norm(xt, 32, wt, bt, 1e-6).numpy()),
    ]
    g = rng.standard_normal((4, 4096, 2560)).astype(np.float32)
    gm, gt = ms.Tensor(g), torch.from_numpy(g)
    gelu_truth = torch.nn.functional.gelu(gt.double()).numpy()
    gelu_rows = [("exact GELU, 42 M values: composed (MindSpore Erf kernel)", lambda: gelu(gm).asnumpy()),
                 ("exact GELU: svd-ms CPU kernel (CPU policy)", lambda: exact_gelu_op()(gm).asnumpy()),
                 ("exact GELU: PyTorch", lambda: torch.nn.functional.gelu(gt).numpy())]
    value, gate = gt.double().chunk(2, dim=-1)
    gated_truth = (value * torch.nn.functional.gelu(gate)).numpy()

    def gated_composed():
        v, g = ops.chunk(gm, 2, axis=-1)
        return (v * gelu(g)).asnumpy()

    def gated_torch():
        v, g = gt.chunk(2, dim=-1)
        return (v * torch.nn.functional.gelu(g)).numpy()
    gated_rows = [("GEGLU gated GELU, 4x4096x2560 -> 1280: chunk views, composed", gated_composed),
                  ("GEGLU gated GELU: svd-ms CPU kernel, one pass (CPU policy)", lambda: gated_gelu_op()(gm).asnumpy()),
                  ("GEGLU gated GELU: PyTorch", gated_torch)]
    print("| operation | time (s) | max abs error vs PyTorch float64 |\n|---|---|---|")
    with torch.no_grad():
        cases = ([(r, truth) for r in rows] + [(r, gelu_truth) for r in gelu_rows]
                 + [(r, gated_truth) for r in gated_rows])
        for (name, fn), ref in cases:
            err = float(np.abs(fn().astype(np.float64) - ref).max())
            print(f"| {name} | {best(fn):.3f} | {err:.1e} |", flush=True)


if __name__ == "__main__":
    main()
