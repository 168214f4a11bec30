"""benchmarks.deepcache: the difference measures, the measuring loop on the tiny reference model
(each setting once, the uncached video first and compared with itself), the report's table and
its random-weights note, and the module's command line."""
import math
import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from benchmarks import common, deepcache
from conftest import TINY_CONFIG, TINY_WEIGHTS


def test_difference_against_the_uncached_video():
    reference = np.full((2, 3, 4, 4), 0.5, np.float32)
    video = reference.copy()
    video[0] += 0.1  # half the values off by 0.1: mse 0.005, PSNR 10*log10(200)
    d = deepcache.difference(video, reference)
    assert d["max_abs"] == pytest.approx(0.1, rel=1e-6) and d["mean_abs"] == pytest.approx(0.05, rel=1e-6)
    assert d["psnr_db"] == pytest.approx(23.0103, abs=1e-3)
    assert deepcache.difference(reference, reference) == {"max_abs": 0.0, "mean_abs": 0.0, "psnr_db": math.inf}


def test_measure_and_report_on_the_tiny_model():
    from svd_ms.pipeline import SVDInferPipeline
    pipe = SVDInferPipeline(TINY_CONFIG, TINY_WEIGHTS, num_frames=2, decode_chunk_size=2)
    image = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    rows = deepcache.measure(pipe, image, {"euler": 3}, [2], branch=0, warmup_steps=2, repeats=1)
    assert [(r["cache"], r.get("cache_interval")) for r in rows] == [("none", None), ("deepcache", 2)]
    assert rows[0]["speedup"] == 1.0 and rows[0]["max_abs"] == 0.0
    assert rows[1]["max_abs"] > 0 and math.isfinite(rows[1]["psnr_db"])  # the cache changes the video
    args = SimpleNamespace(frames=2, size=64, mode="pynative", branch=0, repeats=1, warmup_steps=2)
    text = deepcache.report(args, rows, "python -m benchmarks.deepcache --quick")
    assert deepcache.NOTE in text and "command: python -m benchmarks.deepcache --quick" in text
    assert "| euler | 3 | deepcache | 2 |" in text and "| euler | 3 | none | - |" in text


def test_starts_as_a_module_and_refuses_a_bad_size():
    run = [sys.executable, "-m", "benchmarks.deepcache"]
    env = dict(os.environ, GLOG_v="3")
    res = subprocess.run(run + ["--help"], cwd=common.REPO, capture_output=True, text=True, timeout=120, env=env)
    assert res.returncode == 0 and "not the quality" in res.stdout
    res = subprocess.run(run + ["--size", "100"], cwd=common.REPO, capture_output=True, text=True, timeout=120,
                         env=env)
    assert res.returncode == 2 and "--size must be a multiple of 64" in res.stderr
