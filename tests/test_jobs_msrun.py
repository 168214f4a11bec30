"""image_to_video.py under msrun: 2 CPU workers on this machine against one plain process.

One module-scoped run of each kind is shared by the assertions:
- a single process over 3 good images and a corrupt one;
- msrun --worker_num=2 --local_worker_num=2 over the same files;
- msrun again after removing the corrupt image (a resumed job: nothing to do).

The images are small (192x128) and the sampling short (3 frames, 2 steps) so that it fits in CI.
Every msrun gets a free port and a timeout; its whole process tree is killed afterwards.
"""
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import msrun_helpers

REPO = Path(__file__).resolve().parents[1]
REF = Path(os.environ.get("SVD_MS_REFERENCE", REPO / ".." / "shared" / "reference")).resolve()
TINY_CFG = REF / "tiny_svd.sgm.yaml"
TINY_CKPT = REF / "tiny_svd.safetensors"
TINY_IMG = REF / "tiny_svd.input.png"
TIMEOUT = int(os.environ.get("SVD_TEST_MSRUN_TIMEOUT", "2400"))
SEED = 7
GOOD = ["a_left.png", "b_right.png", "c_demo.png"]



def cli_args(images: Path, out: Path):
    return [str(REPO / "image_to_video.py"), "--SVD.config", str(TINY_CFG),
            "--SVD.checkpoint", str(TINY_CKPT), "--SVD.num_frames=3", "--SVD.num_steps=2",
            "--mode=1", "--device_target=CPU", "--progress=false", f"--seed={SEED}",
            "--output_format=png", "--output_dir", str(out), "--image", str(images)]


def run_msrun(images: Path, out: Path, log_dir: Path):
    return msrun_helpers.run_msrun(cli_args(images, out), log_dir, TIMEOUT)


def frames_of(folder: Path) -> np.ndarray:
    return np.stack([np.asarray(Image.open(f)) for f in sorted(folder.glob("frame_*.png"))])


def output_files(out: Path):
    return {str(p.relative_to(out)): (p.stat().st_mtime_ns, p.stat().st_size)
            for p in out.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    assert TINY_CKPT.exists(), f"shared tiny reference missing: {TINY_CKPT}"
    assert Path(msrun_helpers.MSRUN).exists(), f"msrun not found ({msrun_helpers.MSRUN}); it comes with mindspore"
    d = tmp_path_factory.mktemp("images")
    with Image.open(TINY_IMG) as im:
        src = im.convert("RGB")
    src.crop((0, 0, 192, 128)).save(d / GOOD[0])
    src.crop((192, 128, 384, 256)).save(d / GOOD[1])
    with Image.open(REPO / "assets" / "demo_landscape.png") as demo:
        demo.convert("RGB").resize((192, 128), Image.Resampling.LANCZOS).save(d / GOOD[2])
    (d / "d_corrupt.png").write_bytes((d / GOOD[0]).read_bytes()[:300])  # truncated PNG
    return d


@pytest.fixture(scope="module")
def single(images, tmp_path_factory):
    out = tmp_path_factory.mktemp("single")
    res = subprocess.run([sys.executable] + cli_args(images, out), capture_output=True, text=True,
                         timeout=TIMEOUT, cwd=REPO)
    return out, res


@pytest.fixture(scope="module")
def dist(images, single, tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    rc, launcher, logs = run_msrun(images, out, tmp_path_factory.mktemp("logs1"))
    return out, rc, launcher, logs


@pytest.fixture(scope="module")
def rerun(images, dist, tmp_path_factory):
    out = dist[0]
    # The corrupt image stays failed on every rerun; drop it to see a clean resume.
    good_only = tmp_path_factory.mktemp("good_only")
    for name in GOOD:
        shutil.copy(images / name, good_only / name)
    before = output_files(out)
    time.sleep(0.05)
    rc, launcher, logs = run_msrun(good_only, out, tmp_path_factory.mktemp("logs2"))
    return before, output_files(out), rc, launcher, logs


def test_single_process_reference(single):
    out, res = single
    assert res.returncode == 1, res.stderr[-3000:]  # the corrupt image
    assert "d_corrupt.png" in res.stderr and "Traceback" not in res.stderr
    for i, name in enumerate(GOOD):
        assert len(list((out / f"{Path(name).stem}_seed{SEED + i}").glob("frame_*.png"))) == 3


def test_msrun_same_videos_as_single_process(single, dist):
    out_single, _ = single
    out, rc, launcher, logs = dist
    names = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    assert names == sorted(p.name for p in out_single.iterdir()), (launcher, logs)
    for i, name in enumerate(GOOD):
        folder = f"{Path(name).stem}_seed{SEED + i}"
        a, b = frames_of(out_single / folder), frames_of(out / folder)
        assert a.shape == b.shape == (3, 128, 192, 3)
        assert np.abs(a.astype(np.int16) - b.astype(np.int16)).max() <= 1, folder
        side = json.loads((out / f"{folder}.json").read_text())
        assert side["rank"] == i % 2 and side["world_size"] == 2 and side["seed"] == SEED + i


def test_msrun_corrupt_image_reported_and_exit_nonzero(dist):
    out, rc, launcher, logs = dist
    assert rc != 0
    assert any("d_corrupt.png" in text for text in logs.values())
    assert all("Traceback" not in text for name, text in logs.items() if name.startswith("worker"))
    assert not list(out.glob("d_corrupt_seed*"))


def test_msrun_single_summary(dist):
    out, rc, launcher, logs = dist
    assert [p.name for p in out.glob("*summary*")] == ["job_summary.json"]
    assert not list(out.glob(".job_rank*"))
    s = json.loads((out / "job_summary.json").read_text())
    assert s["world_size"] == 2 and s["base_seed"] == SEED and s["num_images"] == 4
    assert s["counts"] == {"done": 3, "skipped": 0, "failed": 1}
    assert "d_corrupt.png" in s["failed"][0]["image"] and s["failed"][0]["reason"]
    assert [r["rank"] for r in s["ranks"]] == [0, 1]
    assert all(r["timings"].get("total_s") for r in s["ranks"])
    assert s["ok"] is False


def test_msrun_rerun_writes_nothing_new(rerun):
    before, after, rc, launcher, logs = rerun
    assert rc == 0, (launcher, logs)
    changed = {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
    assert changed == {"job_summary.json"}, changed


def test_msrun_rerun_summary_counts_skips(rerun, dist):
    out = dist[0]
    s = json.loads((out / "job_summary.json").read_text())
    assert s["counts"] == {"done": 0, "skipped": 3, "failed": 0} and s["ok"] is True
