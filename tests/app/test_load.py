"""The page under load (svd_ms.app.api and the service behind it), bounded and loopback only: 20
visitors, each its own gradio_client, submit at once to the page served in a process of its own
(tests/served_app.py) with a fast stand-in pipeline whose steps wait while a hold file exists, so
that "while the first job runs" is deterministic. Checked: the service queue holds max_queue and
refuses the rest in one line each; the waiting visitors read positions 1..max_queue, which close
up when two of them cancel; the running one cancels; every finished video is a complete mp4 of the
right frames showing its own visitor's picture and seed; after a first round, a second round of
20 does not grow the server's memory. Stops by itself: every wait has a deadline, and the server
exits when the test closes its stdin (or dies), or after LIFETIME_S."""
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

from conftest import ROOT

VISITORS, MAX_QUEUE, FRAMES, STEPS, SIDE = 20, 8, 3, 3, 64
DEADLINE_S, LIFETIME_S = 60, 170
RSS_GROWTH_BOUND_MB = 32


def _rss_mb(pid) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


def _colour(k: int):
    return np.array([(40 * k) % 256, 255 - (25 * k) % 256, (90 * k + 60) % 256])


def _wait_for(condition, what):
    deadline = time.time() + DEADLINE_S
    while not condition():
        assert time.time() < deadline, f"gave up waiting for {what}"
        time.sleep(0.05)


class Visitor:
    def __init__(self, k, url, folder):
        from gradio_client import Client
        self.k, self.seed = k, 1000 + k
        self.client = Client(url, verbose=False, download_files=str(folder / f"downloads_{k}"))
        self.picture = folder / f"visitor_{k}.png"
        Image.fromarray(np.full((SIDE, SIDE, 3), _colour(k), np.uint8)).save(self.picture)
        self.job = None

    def submit(self):
        from gradio_client import handle_file
        self.job = self.client.submit(handle_file(str(self.picture)), seed=self.seed, num_frames=FRAMES,
                                      num_steps=STEPS, api_name="/image_to_video")

    def outcome(self):
        """("done", video path, sidecar) or ("error", message)."""
        try:
            video, sidecar = self.job.result(timeout=DEADLINE_S)
            return "done", video, json.loads(sidecar)
        except Exception as exc:  # gradio_client's AppError carries the server's one line
            return "error", str(exc)

    def status(self):
        return self.client.predict(api_name="/status")


def _in_parallel(fn, items):
    threads = [threading.Thread(target=fn, args=(item,)) for item in items]
    for t in threads:
        t.start()
    for t in threads:
        t.join(DEADLINE_S)


def _check_video(visitor, outcome):
    """A complete mp4 of FRAMES frames showing this visitor's picture, recorded with its seed."""
    import imageio
    _, video, sidecar = outcome
    assert sidecar["seed"] == visitor.seed and sidecar["input"]["path"] == visitor.picture.name
    with imageio.get_reader(video, format="FFMPEG") as reader:  # every frame decoded: the file is whole
        frames = np.stack([np.asarray(frame) for frame in reader])
    assert frames.shape == (FRAMES, SIDE, SIDE, 3) and sidecar["frames"] == FRAMES, (visitor.k, frames.shape)
    first = frames[0].astype(np.float64).mean(axis=(0, 1))
    nearest = min(range(VISITORS), key=lambda j: np.abs(_colour(j) - first).sum())
    assert nearest == visitor.k, f"visitor {visitor.k} got a video of visitor {nearest}'s picture"


def _visitors(url, folder):
    folder.mkdir()
    visitors = []
    _in_parallel(lambda k: visitors.append(Visitor(k, url, folder)), range(VISITORS))
    visitors.sort(key=lambda v: v.k)
    barrier = threading.Barrier(VISITORS)
    _in_parallel(lambda v: (barrier.wait(DEADLINE_S), v.submit()), visitors)
    return visitors


def _held_round(url, folder, hold):
    """The first job holds the device: 1 runs, MAX_QUEUE wait, the rest are refused; two waiting
    visitors and the running one cancel; then the jobs go on."""
    Path(hold).touch()
    visitors = _visitors(url, folder)
    _wait_for(lambda: sum(v.job.done() for v in visitors) == VISITORS - 1 - MAX_QUEUE
              and visitors[0].status()["queue_length"] == 1 + MAX_QUEUE, "the queue to fill")
    refused = [v for v in visitors if v.job.done()]
    waiting = [v for v in visitors if not v.job.done()]
    views = {v.k: v.status()["jobs"][-1] for v in waiting}
    running = [v for v in waiting if views[v.k]["state"] == "running"]
    by_position = {views[v.k]["position"]: v for v in waiting if views[v.k]["state"] == "queued"}
    print(f"\n[load] {len(refused)} refused, {len(running)} running, positions {sorted(by_position)}")
    assert len(running) == 1 and sorted(by_position) == list(range(1, MAX_QUEUE + 1))
    for v in refused:
        _, message = v.outcome()
        assert "requests are already waiting (the limit is 8)" in message and "\n" not in message, message
    leaving = [by_position[3], by_position[7]]
    for v in leaving:
        assert v.client.predict(api_name="/cancel") == 1
    closed_up = sorted(v.status()["jobs"][-1]["position"] for v in waiting if v not in leaving + running)
    print(f"[load] after two waiting visitors cancel: positions {closed_up}")
    assert closed_up == list(range(1, MAX_QUEUE - 1))
    assert running[0].client.predict(api_name="/cancel") == 1
    os.remove(hold)
    return visitors, [v.outcome() for v in visitors]


def _check_round(visitors, outcomes):
    done = [(v, o) for v, o in zip(visitors, outcomes) if o[0] == "done"]
    for v, o in done:
        _check_video(v, o)
    _in_parallel(lambda v: v.client.close(), visitors)  # each waits up to 1 s for its heartbeat thread
    return done, [o[1] for o in outcomes if o[0] == "error"]


def test_twenty_visitors_submitting_and_cancelling(tmp_path):
    t0 = time.perf_counter()
    out, hold = tmp_path / "out", str(tmp_path / "hold")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.path.join(ROOT, "tests")]), GLOG_v="3",
               GRADIO_ANALYTICS_ENABLED="False")
    server = subprocess.Popen([sys.executable, "-m", "served_app", str(out), str(tmp_path / "uploads"), hold,
                               str(MAX_QUEUE), str(LIFETIME_S)], cwd=ROOT, env=env, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = server.stdout.readline()
        assert line.startswith("URL "), f"the server did not start: {line!r} (exit {server.poll()})"
        url = line.split()[1]
        started = time.perf_counter() - t0
        rss = []
        # Round 1 also warms up what a busy server keeps (Gradio's caches and thread pools,
        # allocator arenas); round 2, the same again, must not grow the server's memory.
        for n in (1, 2):
            done, errors = _check_round(*_held_round(url, tmp_path / f"round{n}", hold))
            assert errors.count("cancelled") == 3 and len(errors) == 3 + VISITORS - 1 - MAX_QUEUE and \
                len(done) == MAX_QUEUE - 2, errors
            rss.append(_rss_mb(server.pid))
        growth = rss[1] - rss[0]
        print(f"[load] each round: {MAX_QUEUE - 2} videos, 3 cancelled, {VISITORS - 1 - MAX_QUEUE} refused; server "
              f"started in {started:.1f} s, RSS {rss[0]:.0f} MB after round 1, growth over round 2 {growth:+.1f} MB "
              f"(bound {RSS_GROWTH_BOUND_MB}); {time.perf_counter() - t0:.1f} s in all")
        assert growth < RSS_GROWTH_BOUND_MB
        assert len(list(out.glob("*.mp4"))) == 2 * (MAX_QUEUE - 2)
        assert server.poll() is None  # still serving
    finally:
        server.stdin.close()  # the server's signal to stop
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
