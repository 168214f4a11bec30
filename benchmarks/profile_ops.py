"""Where the time goes, op by op: one full-size UNet step (classifier-free guidance batch) and one
VAE decode, svd-ms under MindSpore's own profiler (PyNative and graph mode) beside diffusers under
torch.profiler, with the weights and inputs of benchmarks.bench (random, identical for both).

Each system runs in its own process: one untimed call (graph compile, allocator warm-up), then one
profiled call. The table lists each op's calls, time and share of the profiled call's op time
(self time for PyTorch, so that shares add up), the largest first.

    python -m benchmarks.profile_ops --quick                  # 4 frames of 128x128
    python -m benchmarks.profile_ops --frames 14 --size 256   # the README's size (hours on 2 cores)
    python -m benchmarks.profile_ops --systems ours-pynative,torch --parts unet
"""
import argparse
import csv
import glob
import os
import platform
import tempfile
import time

from benchmarks import common

SYSTEMS = ("ours-pynative", "ours-graph", "torch")
PARTS = ("unet", "vae")
TOP = 12


def mindspore_op_table(csv_path: str) -> list:
    """Rows {op, calls, ms} of MindSpore's `cpu_op_type_info_*.csv` (one row per op type)."""
    with open(csv_path, newline="") as f:
        return [{"op": row["op_type"], "calls": int(row["type_occurrences"]), "ms": float(row["total_compute_time"])}
                for row in csv.DictReader(f)]


def torch_op_table(prof) -> list:
    """Rows {op, calls, ms} of a torch.profiler run: every op's self CPU time, so that nested ops
    (aten::linear over aten::addmm) are not counted twice."""
    return [{"op": e.key, "calls": int(e.count), "ms": e.self_cpu_time_total / 1e3} for e in prof.key_averages()
            if e.self_cpu_time_total > 0]


def shares(rows: list, top: int = TOP) -> list:
    """The `top` largest rows with their share of the total, then the rest summed as 'other'."""
    rows = sorted(rows, key=lambda r: -r["ms"])
    total = sum(r["ms"] for r in rows) or 1.0
    kept = [dict(r, share=r["ms"] / total) for r in rows[:top]]
    rest = rows[top:]
    if rest:
        ms = sum(r["ms"] for r in rest)
        kept.append({"op": f"other ({len(rest)} ops)", "calls": sum(r["calls"] for r in rest), "ms": ms,
                     "share": ms / total})
    return kept


def _call(args, system: str, part: str):
    from benchmarks import bench
    if system == "torch":
        return bench.unet_torch(args)[0] if part == "unet" else bench.vae_torch(args)
    mode = system.split("-", 1)[1]
    return bench.unet_ours(args, mode)[0] if part == "unet" else bench.vae_ours(args, mode)


def worker(args):
    system, part = args.worker.rsplit(":", 1)
    call = _call(args, system, part)
    call()  # compile and warm up, unprofiled
    start = time.perf_counter()
    if system == "torch":
        import torch
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            call()
        rows = torch_op_table(prof)
    else:
        import mindspore as ms
        out = tempfile.mkdtemp(prefix="svd_profile_")
        profiler = ms.Profiler(output_path=out)
        call()
        profiler.stop()
        profiler.analyse()
        found = glob.glob(os.path.join(out, "**", "cpu_op_type_info_*.csv"), recursive=True)
        if not found:
            raise SystemExit(f"MindSpore's profiler wrote no cpu_op_type_info_*.csv under {out}")
        rows = mindspore_op_table(found[0])
    common.emit({"system": system, "part": part, "wall_s": time.perf_counter() - start, "rows": rows})


def report(args, results: list) -> str:
    lines = [f"Per-op profile: {args.frames} frames of {args.size}x{args.size} (UNet: a batch of 2 videos, "
             f"VAE: {args.frames} frames as one clip), full-size SVD with random weights",
             f"host: {platform.processor() or platform.machine()}, {len(os.sched_getaffinity(0))} cores"]
    for res in results:
        if "error" in res:
            lines += ["", f"### {res['system']} {res['part']}: failed ({res['error']})"]
            continue
        total = sum(r["ms"] for r in res["rows"])
        lines += ["", f"### {res['part']}, {res['system']}: op time {total / 1e3:.2f} s "
                      f"(profiled call {res['wall_s']:.2f} s wall, profiler overhead included)", "",
                  "| op | calls | time ms | share |", "|---|---|---|---|"]
        lines += [f"| {r['op']} | {r['calls']} | {r['ms']:.1f} | {100 * r['share']:.1f}% |" for r in shares(res["rows"])]
    return "\n".join(lines)


def run_worker(args, system: str, part: str) -> dict:
    print(f"[profile] {system} {part} ...", flush=True)
    proc = common.run_child("profile_ops", "--worker", f"{system}:{part}", "--frames", args.frames, "--size",
                            args.size, timeout=args.timeout)
    results = common.results_of(proc.stdout)
    if proc.returncode != 0 or not results:
        tail = common.output_tail(proc, 5)
        return {"system": system, "part": part, "error": f"exit {proc.returncode}: {tail.splitlines()[-1] if tail else ''}"}
    return results[-1]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="4 frames of 128x128 (the default size)")
    ap.add_argument("--frames", type=int, default=4)
    ap.add_argument("--size", type=int, default=128, help="square frame side, a multiple of 64")
    ap.add_argument("--systems", default=",".join(SYSTEMS), help=f"out of {','.join(SYSTEMS)}")
    ap.add_argument("--parts", default=",".join(PARTS), help=f"out of {','.join(PARTS)}")
    ap.add_argument("--timeout", type=int, default=7200, help="seconds per system and part")
    ap.add_argument("--json", default=None, help="also write the rows and the report here")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.size % 64:
        ap.error("--size must be a multiple of 64")
    args.vae_frames = args.frames  # what benchmarks.bench's VAE builders read
    if args.worker:
        return worker(args)
    systems = [s for s in args.systems.split(",") if s]
    parts = [p for p in args.parts.split(",") if p]
    bad = [s for s in systems if s not in SYSTEMS] + [p for p in parts if p not in PARTS]
    if bad:
        ap.error(f"unknown systems or parts: {', '.join(bad)}")
    results = [run_worker(args, system, part) for part in parts for system in systems]
    text = report(args, results)
    print("\n" + text, flush=True)
    common.write_json_report(args.json, args, text, results=results)


if __name__ == "__main__":
    main()
