"""Across the ranks of an msrun job: one verdict on the setup, one job id and base seed, each rank's
results file with a heartbeat, and rank 0's `job_summary.json` over all of them.

Rank r takes the inputs at positions i with i % world_size == r. Each rank mirrors its results to
`.job_rank<r>.json`, rewritten every HEARTBEAT_S seconds so that the others can tell it is alive;
rank 0 waits for every rank's finished file (or `dist_timeout` seconds of silence) and writes the
summary; the other ranks wait for that summary before they leave.
"""
import contextlib
import hashlib
import json
import os
import secrets
import socket
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import UsageError
from ..media import write_json
from ..runtime import Cluster
from ..seeds import draw_seed
from .console import log, report_error, warn
from .settings import EXIT_FAILED, EXIT_OK, EXIT_SETUP

SUMMARY_NAME = "job_summary.json"
RANK_FILE = ".job_rank{rank}.json"
HEARTBEAT_S = 10.0


def _hash31(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big") & 0x7FFFFFFF


def _mean(xs) -> Optional[float]:
    xs = [x for x in xs if x is not None]
    return float(np.mean(xs)) if xs else None


def agree(cluster: Cluster, setup_error: Optional[str], seed: Optional[int], inputs: Sequence[str],
          kind: str) -> Tuple[int, int]:
    """Share every rank's setup verdict, so that all stop together, and take rank 0's job id and
    base seed (the user's seed, or one drawn by rank 0). Returns (job_id, base_seed)."""
    job_id = secrets.randbelow(2**31)  # an identifier of this run, not a seed
    base_seed = seed if seed is not None and setup_error is None else draw_seed()
    shared = cluster.all_gather_ints([0 if setup_error else 1, job_id, base_seed >> 16, base_seed & 0xFFFF,
                                      _hash31("\n".join(inputs))])
    if setup_error:
        raise UsageError(setup_error)
    if not shared[:, 0].all():
        bad = [int(r) for r in np.nonzero(shared[:, 0] == 0)[0]]
        raise UsageError(f"setup failed on rank(s) {bad}; see their logs")
    if len(set(shared[:, 4].tolist())) != 1:
        raise UsageError(f"workers see different --{kind} lists (different working directories or file "
                         "systems?); every worker must see the same files")
    return int(shared[0, 1]), (int(shared[0, 2]) << 16) | int(shared[0, 3])


def remove_rank_files(out_dir: Path, world_size: Optional[int] = None) -> None:
    """Rank files of this job (world_size given) or of any earlier one."""
    paths = (out_dir.glob(".job_rank*.json") if world_size is None
             else [out_dir / RANK_FILE.format(rank=r) for r in range(world_size)])
    for p in paths:
        with contextlib.suppress(OSError):
            p.unlink()


class RankState:
    """This rank's results, mirrored to .job_rank<k>.json with a heartbeat in distributed runs."""

    def __init__(self, out_dir: Path, cluster: Cluster, job_id: int):
        self.path = out_dir / RANK_FILE.format(rank=cluster.rank)
        self.enabled = cluster.distributed
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.data: Dict[str, Any] = {
            "job_id": job_id, "rank": cluster.rank, "world_size": cluster.world_size,
            "host": socket.gethostname(), "pid": os.getpid(), "finished": False,
            "heartbeat": time.time(), "assigned": 0, "done": [], "skipped": [], "failed": [], "timings": {},
        }
        self.thread = None
        if self.enabled:
            self.flush()
            self.thread = threading.Thread(target=self._beat, daemon=True)
            self.thread.start()

    def _beat(self):
        while not self.stop.wait(HEARTBEAT_S):
            self.flush()

    def flush(self):
        if not self.enabled:
            return
        with self.lock:
            self.data["heartbeat"] = time.time()
            with contextlib.suppress(OSError):
                write_json(self.path, self.data)

    def add(self, kind: str, entry: Dict[str, Any]):
        with self.lock:
            self.data[kind].append(entry)
        self.flush()

    def fail(self, entry: Dict[str, Any], reason: str):
        entry["reason"] = reason
        report_error(reason)
        self.add("failed", entry)

    def finish(self, keep_beating: bool = False):
        """Publish the final results. Rank 0 keeps its heartbeat while it waits for the others, so
        that they can tell it is alive; the other ranks fall silent."""
        if not keep_beating:
            self.end_heartbeat()
        with self.lock:
            self.data["finished"] = True
        self.flush()

    def end_heartbeat(self):
        self.stop.set()
        if self.thread is not None:
            self.thread.join(timeout=HEARTBEAT_S + 5)
            self.thread = None


def _signature(path: Path):
    try:
        st = path.stat()
        return st.st_mtime_ns, st.st_size
    except OSError:
        return None


def wait_for_summary(out_dir: Path, job_id: int, timeout: float, tag: str = "") -> None:
    """Ranks other than 0: wait until rank 0 has written this job's summary, or has been silent
    (no heartbeat in its results file) for `timeout` seconds."""
    summary, beat = out_dir / SUMMARY_NAME, out_dir / RANK_FILE.format(rank=0)
    last_sig, last_change = None, time.monotonic()
    while True:
        with contextlib.suppress(OSError, ValueError):
            with open(summary, encoding="utf-8") as f:
                if json.load(f).get("job_id") == job_id:
                    return
        sig = _signature(beat)
        if sig != last_sig:
            last_sig, last_change = sig, time.monotonic()
        elif time.monotonic() - last_change > timeout:
            warn(f"{tag}rank 0 silent for {timeout:.0f} s; leaving without its job summary")
            return
        time.sleep(0.5)


def gather_rank_files(out_dir: Path, job_id: int, world: int, timeout: float) -> List[Dict]:
    """Rank 0: wait until every rank has written its finished results file; a rank silent for
    `timeout` seconds is reported as lost."""
    results: Dict[int, Dict] = {}
    last_change: Dict[int, float] = {r: time.monotonic() for r in range(world)}
    last_sig: Dict[int, Any] = {}
    waiting_note = time.monotonic()
    while len(results) < world:
        for r in range(world):
            if r in results:
                continue
            p = out_dir / RANK_FILE.format(rank=r)
            sig = _signature(p)
            if sig is not None and sig != last_sig.get(r):
                last_sig[r] = sig
                try:
                    with open(p, encoding="utf-8") as f:
                        data = json.load(f)
                except (OSError, ValueError):
                    continue
                if data.get("job_id") != job_id:
                    continue
                last_change[r] = time.monotonic()
                if data.get("finished"):
                    results[r] = data
            elif time.monotonic() - last_change[r] > timeout:
                results[r] = {"rank": r, "lost": True, "done": [], "skipped": [],
                              "failed": [{"image": f"<images of rank {r}>", "rank": r,
                                          "reason": f"rank {r} sent no results for {timeout:.0f} s (crashed, "
                                          f"or {str(out_dir)!r} is not shared between servers)"}]}
        if len(results) < world:
            if time.monotonic() - waiting_note > 60:
                log(f"[rank 0] waiting for rank(s) {[r for r in range(world) if r not in results]} to finish")
                waiting_note = time.monotonic()
            time.sleep(0.5)
    return [results[r] for r in range(world)]


def write_summary(out_dir: Path, ranks: List[Dict], job_id: int, base_seed: int, inputs: List[str],
                  output_format: str, world_size: int, code: int) -> int:
    """Rank 0: `job_summary.json` over every rank's results, the failures printed; returns the exit code."""
    done = sorted((e for r in ranks for e in r.get("done", [])), key=lambda e: e["index"])
    skipped = sorted((e for r in ranks for e in r.get("skipped", [])), key=lambda e: e["index"])
    failed = [e for r in ranks for e in r.get("failed", [])]
    failed.sort(key=lambda e: (e.get("index", -1), e["image"]))
    summary = {
        "job_id": job_id, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "world_size": world_size, "base_seed": base_seed, "output_dir": str(out_dir),
        "output_format": output_format, "num_images": len(inputs),
        "counts": {"done": len(done), "skipped": len(skipped), "failed": len(failed)},
        "ok": not failed, "done": done, "skipped": skipped,
        "failed": [{"image": e["image"], "reason": e.get("reason", "?"), "rank": e.get("rank"),
                    "seed": e.get("seed")} for e in failed],
        "ranks": [{"rank": r.get("rank"), "host": r.get("host"), "pid": r.get("pid"),
                   "lost": r.get("lost", False), "assigned": r.get("assigned"),
                   "done": len(r.get("done", [])), "skipped": len(r.get("skipped", [])),
                   "failed": len(r.get("failed", [])), "timings": r.get("timings", {}),
                   "mean_step_s": _mean([e.get("timings", {}).get("mean_step_s") for e in r.get("done", [])])}
                  for r in ranks],
    }
    try:
        write_json(out_dir / SUMMARY_NAME, summary)
    except OSError as exc:
        report_error(str(exc))
        code = EXIT_FAILED if code == EXIT_OK else code
    log(f"job: {len(done)} done, {len(skipped)} skipped, {len(failed)} failed ({str(out_dir / SUMMARY_NAME)!r})")
    for e in summary["failed"]:
        reason = e["reason"] if e["image"] in e["reason"] else f"{e['image']!r}: {e['reason']}"
        print(f"FAILED {reason}", file=sys.stderr, flush=True)
    if failed:
        return EXIT_SETUP if code == EXIT_SETUP and not done and not skipped else EXIT_FAILED
    return code
