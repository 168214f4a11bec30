"""benchmarks.common: the helpers every benchmark shares, and the benchmarks as a package
(each starts as `python -m benchmarks.<name>` from the repository root, with no sys.path edits)."""
import os
import subprocess
import sys

import numpy as np
import pytest

from benchmarks import common

BENCHMARKS = ("bench", "e2e", "conv_paths", "convert_memory", "load_memory", "long_video", "sampling", "train_step",
              "profile_ops", "cpu_norms", "cpu_threads", "deepcache", "preview_cost", "layer_times")


def test_time_calls_counts_warmup_and_repeats():
    calls = []
    first, median, times = common.time_calls(lambda: calls.append(1), warmup=3, repeats=4)
    assert len(calls) == 3 + 4 and len(times) == 4
    assert first >= 0 and median == pytest.approx(float(np.median(times)))
    calls.clear()
    assert common.best_time(lambda: calls.append(1), repeats=2) >= 0 and len(calls) == 3


def test_results_travel_from_child_to_parent(capsys):
    common.emit({"system": "x", "s": 1.5})
    common.emit({"system": "y"})
    out = capsys.readouterr().out
    assert common.results_of("noise\n" + out + "RESULTS not one\n") == [{"system": "x", "s": 1.5}, {"system": "y"}]


def test_child_command_is_the_package_form():
    assert common.child_command("e2e", "--worker", 3) == [sys.executable, "-m", "benchmarks.e2e", "--worker", "3"]


def test_run_child_runs_from_the_repository_root_with_quiet_mindspore(monkeypatch):
    seen = {}

    def fake_run(cmd, **kwargs):
        seen.update(kwargs, cmd=cmd)
        return subprocess.CompletedProcess(cmd, 0, "a\nb\nc", "d")
    monkeypatch.setattr(common.subprocess, "run", fake_run)
    monkeypatch.delenv("GLOG_v", raising=False)
    proc = common.run_child("sampling", "--steps", 2, timeout=5)
    assert seen["cwd"] == common.REPO and seen["env"]["GLOG_v"] == "3" and seen["timeout"] == 5
    assert seen["cmd"][1:] == ["-m", "benchmarks.sampling", "--steps", "2"]
    assert common.output_tail(proc, 2) == "c\nd"


def test_memory_readings():
    assert common.peak_rss_bytes() > 10 * 2 ** 20
    assert common.proc_status_kb("VmHWM") * 1024 >= 10 * 2 ** 20
    assert common.proc_status_kb("NoSuchField") == 0
    assert 0 < common.meminfo_gb("MemAvailable") <= common.meminfo_gb("MemTotal")
    assert np.isnan(common.meminfo_gb("NoSuchField"))
    assert common.gb(1.5e9) == "1.50 GB"


def test_random_weights_are_deterministic_per_name_and_sized_by_role():
    a = common.random_weight("unet/conv.weight", (64, 32, 3, 3))
    assert np.array_equal(a, common.random_weight("unet/conv.weight", (64, 32, 3, 3)))
    assert not np.array_equal(a, common.random_weight("unet/conv2.weight", (64, 32, 3, 3)))
    assert a.dtype == np.float32 and abs(a.std() - 1 / np.sqrt(32 * 9)) < 0.01  # N(0, 1/fan_in)
    norm = common.random_weight("norm.weight", (4096,))
    bias = common.random_weight("norm.bias", (4096,))
    assert abs(norm.mean() - 1) < 0.01 and abs(bias.std() - 0.02) < 0.002


def test_reference_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("SVD_MS_REFERENCE", str(tmp_path))
    assert common.reference_dir() == str(tmp_path)


@pytest.mark.parametrize("name", BENCHMARKS)
def test_each_benchmark_starts_as_a_module(name):
    res = subprocess.run([sys.executable, "-m", f"benchmarks.{name}", "--help"], cwd=common.REPO,
                         capture_output=True, text=True, timeout=120, check=False,
                         env=dict(os.environ, GLOG_v="3"))
    assert res.returncode == 0 and "usage:" in res.stdout, res.stderr[-2000:]


def test_write_json_report_keeps_args_rows_and_report(tmp_path):
    import argparse
    import json

    path = tmp_path / "out.json"
    common.write_json_report(str(path), argparse.Namespace(quick=True), "the table", rows=[{"a": 1}])
    assert json.loads(path.read_text()) == {"args": {"quick": True}, "rows": [{"a": 1}], "report": "the table"}
    common.write_json_report(None, argparse.Namespace(), "nothing written")
