"""svd_ms.jobs.batch (BatchJob, through the package's front `svd_ms.jobs`): names, seeds, sidecars,
summary, resume and its completion rule, per-image failures -- with a stand-in pipeline
(tests/fake_pipeline.py), so no model runs."""
import json
import os
import shlex
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import TINY_CONFIG
from fake_pipeline import FakePipeline
from svd_ms import jobs
from svd_ms.params import SVDParams


# Child processes find the stand-in pipeline (tests/fake_pipeline.py) through PYTHONPATH.
ENV = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(Path(__file__).parents[1]),
                                                             os.environ.get("PYTHONPATH", "")) if p))


def run(capsys, out_dir, *images, params=None, **settings):
    settings.setdefault("progress", False)
    job = jobs.BatchJob(jobs.JobSettings(images=[str(i) for i in images], output_dir=str(out_dir), **settings),
                        params or SVDParams(config=TINY_CONFIG), FakePipeline)
    rc = job.run()
    out, err = capsys.readouterr()
    return rc, out, err


def outputs(d: Path):
    return sorted(p.name for p in d.iterdir()) if d.exists() else []


def test_names_sidecar_seeds_and_summary(tmp_path, img, capsys):
    out = tmp_path / "o"
    rc, stdout, err = run(capsys, out, img("a.png"), img("b.png"), seed=40)
    assert rc == 0, err
    assert outputs(out) == ["a_seed40.json", "a_seed40.mp4", "b_seed41.json", "b_seed41.mp4", "job_summary.json"]
    side = json.loads((out / "b_seed41.json").read_text())
    assert side["seed"] == 41 and side["base_seed"] == 40 and side["index_in_job"] == 1
    for key in ("versions", "timings", "parameters", "pipeline", "input", "memory", "reproduce", "settings"):
        assert key in side
    assert side["status"] == "done" and side["video"] == "b_seed41.mp4"
    assert side["video_sha256"] == jobs.file_digest(out / "b_seed41.mp4")
    assert side["versions"]["mindspore"] and "mean_step_s" in side["timings"]
    assert "seed: 40" in stdout and "s/step" in stdout and "peak host mem" in stdout
    summary = json.loads((out / "job_summary.json").read_text())
    assert summary["counts"] == {"done": 2, "skipped": 0, "failed": 0}


def test_random_seed_is_printed_and_recorded(tmp_path, img, capsys):
    out = tmp_path / "o"
    rc, stdout, _ = run(capsys, out, img())
    assert rc == 0
    seed = int(stdout.split("seed: ")[1].split()[0].rstrip(";"))
    assert (out / f"photo_seed{seed}.mp4").exists()
    assert json.loads((out / f"photo_seed{seed}.json").read_text())["seed"] == seed


def test_same_seed_same_video_and_no_overwrite(tmp_path, img, capsys):
    src, out = img(), tmp_path / "o"
    assert run(capsys, out, src, seed=5, output_format="png")[0] == 0
    frames = out / "photo_seed5"
    first = {p.name: p.read_bytes() for p in frames.iterdir()}
    stamp = {p.name: p.stat().st_mtime_ns for p in out.rglob("*") if p.name != "job_summary.json"}
    rc, stdout, _ = run(capsys, out, src, seed=5, output_format="png")
    assert rc == 0 and "skip" in stdout
    assert stamp == {p.name: p.stat().st_mtime_ns for p in out.rglob("*") if p.name != "job_summary.json"}
    assert run(capsys, out, src, seed=5, output_format="png", overwrite=True)[0] == 0
    assert first == {p.name: p.read_bytes() for p in frames.iterdir()}
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporaries left


def test_video_without_sidecar_is_not_overwritten(tmp_path, img, capsys):
    out = tmp_path / "o"
    out.mkdir()
    (out / "photo_seed1.mp4").write_bytes(b"mine")
    rc, _, err = run(capsys, out, img(), seed=1)
    assert rc == 1 and "--overwrite" in err
    assert (out / "photo_seed1.mp4").read_bytes() == b"mine"


def test_one_bad_image_others_still_run(tmp_path, img, capsys):
    good = img("good.png")
    bad = tmp_path / "in" / "bad.png"
    bad.write_bytes(b"not a png at all")
    out = tmp_path / "o"
    rc, _, err = run(capsys, out, good, bad, seed=0)
    assert rc == 1
    assert (out / "good_seed1.mp4").exists() and not (out / "bad_seed0.mp4").exists()
    assert "bad.png" in err and "Traceback" not in err
    summary = json.loads((out / "job_summary.json").read_text())
    assert summary["counts"]["failed"] == 1 and "bad.png" in summary["failed"][0]["reason"]


@pytest.mark.parametrize("how", ["nan", "raise"])
def test_non_finite_output_is_reported_not_written(tmp_path, img, capsys, monkeypatch, how):
    monkeypatch.setattr(FakePipeline, "nan" if how == "nan" else "raise_nonfinite", True)
    out = tmp_path / "o"
    rc, _, err = run(capsys, out, img(), seed=3)
    assert rc == 1 and "photo.png" in err and "Traceback" not in err
    assert ("NaN" in err) and ("decoded frames" in err if how == "nan" else "latents" in err)
    assert [n for n in outputs(out) if n != "job_summary.json"] == []


def test_unreadable_image(tmp_path, img, capsys, monkeypatch):
    p = img("locked.png")
    p.chmod(0)
    if hasattr(os, "geteuid") and os.geteuid() == 0:  # root reads anything: refuse it by hand
        import PIL.Image
        real_open = PIL.Image.open

        def deny(fp, *a, **k):
            if str(fp) == str(p):
                raise PermissionError(13, "Permission denied", str(fp))
            return real_open(fp, *a, **k)
        monkeypatch.setattr(PIL.Image, "open", deny)
    rc, _, err = run(capsys, tmp_path / "out", p)
    assert rc == 1 and "locked.png" in err and "permission" in err


# ---- completion and resume (issue: job integrity) ---------------------------------------------

def test_truncated_video_is_not_recorded_as_done(tmp_path, img, capsys, monkeypatch):
    """An encoder that stops early (disk full, file-size limit): the image fails, nothing is left
    under the final names, and a rerun makes it."""
    from svd_ms import media
    real = media._encode
    monkeypatch.setattr(media, "_encode", lambda f, path, fmt, fps: real(f[:1], path, fmt, fps))
    out, src = tmp_path / "o", img()
    rc, _, err = run(capsys, out, src, seed=2)
    assert rc == 1 and "did not finish" in err
    assert outputs(out) == ["job_summary.json"]
    monkeypatch.setattr(media, "_encode", real)
    rc, stdout, err = run(capsys, out, src, seed=2)
    assert rc == 0 and "skip '" not in stdout and (out / "photo_seed2.mp4").exists()


def test_kill_between_video_and_sidecar_is_redone(tmp_path, img, capsys, monkeypatch):
    """Killed after the video's rename and before the final sidecar: the rerun redoes that image
    (without --overwrite) and leaves the finished one alone."""
    out = tmp_path / "o"
    a, b = img("a.png"), img("b.png")
    assert run(capsys, out, a, b, seed=0)[0] == 0
    stamp_a = (out / "a_seed0.mp4").stat().st_mtime_ns
    record = json.loads((out / "b_seed1.json").read_text())
    (out / "b_seed1.json").write_text(json.dumps(dict(record, status="writing")))
    (out / ".b_seed1.tmp999999999.mp4").write_bytes(b"left by a killed run")
    rc, stdout, err = run(capsys, out, a, b, seed=0)
    assert rc == 0, err
    assert "redo 'b" in stdout.replace(str(tmp_path / "in") + "/", "") or "redo" in stdout
    assert (out / "a_seed0.mp4").stat().st_mtime_ns == stamp_a
    assert json.loads((out / "b_seed1.json").read_text())["status"] == "done"
    assert not [p for p in out.iterdir() if ".tmp" in p.name]


def test_sigkill_during_write_then_rerun_completes(tmp_path, img):
    """A real SIGKILL at the point named in the issue: right after the video is renamed into place."""
    src, out = img(), tmp_path / "o"
    script = textwrap.dedent(f"""
        import os, signal, sys
        from fake_pipeline import FakePipeline
        from svd_ms import jobs, media
        from svd_ms.jobs import batch
        from svd_ms.params import SVDParams
        real = media.write_video
        def write_then_die(*a, **k):
            real(*a, **k)
            os.kill(os.getpid(), signal.SIGKILL)
        batch.write_video = write_then_die
        job = jobs.BatchJob(jobs.JobSettings(images=[{str(src)!r}], output_dir={str(out)!r}, seed=4, progress=False),
                            SVDParams(config={TINY_CONFIG!r}), FakePipeline)
        job.run()
    """)
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=ENV)
    assert res.returncode == -signal.SIGKILL, res.stderr
    assert json.loads((out / "photo_seed4.json").read_text())["status"] == "writing"
    res = subprocess.run([sys.executable, "-c", script.replace("batch.write_video = write_then_die", "")],
                         capture_output=True, text=True, timeout=300, env=ENV)
    assert res.returncode == 0, res.stderr
    assert json.loads((out / "photo_seed4.json").read_text())["status"] == "done"


def test_rerun_with_other_settings_is_refused(tmp_path, img, capsys):
    out, src = tmp_path / "o", img()
    assert run(capsys, out, src, seed=7)[0] == 0
    before = (out / "photo_seed7.mp4").read_bytes()
    rc, _, err = run(capsys, out, src, seed=7, params=SVDParams(config=TINY_CONFIG, num_frames=4))
    assert rc == 1 and "num_frames" in err and "--overwrite" in err and "--output_dir" in err
    assert (out / "photo_seed7.mp4").read_bytes() == before
    rc, _, err = run(capsys, out, src, seed=7, params=SVDParams(config=TINY_CONFIG, num_frames=4), overwrite=True)
    assert rc == 0, err
    assert json.loads((out / "photo_seed7.json").read_text())["frames"] == 4


def test_empty_sidecar_does_not_count_as_done(tmp_path, img, capsys):
    out, src = tmp_path / "o", img()
    assert run(capsys, out, src, seed=9)[0] == 0
    (out / "photo_seed9.json").write_text("{}")
    rc, stdout, _ = run(capsys, out, src, seed=9)
    assert rc == 0 and "skip '" not in stdout
    assert json.loads((out / "photo_seed9.json").read_text())["status"] == "done"


def test_overwrite_refuses_a_directory_that_is_not_ours(tmp_path, img, capsys):
    out, src = tmp_path / "o", img()
    (out / "photo_seed3.mp4").mkdir(parents=True)
    (out / "photo_seed3.mp4" / "precious.txt").write_text("keep")
    rc, _, err = run(capsys, out, src, seed=3, overwrite=True)
    assert rc == 1 and "directory" in err
    assert (out / "photo_seed3.mp4" / "precious.txt").read_text() == "keep"


def test_summary_write_failure_is_named(tmp_path, img, capsys, monkeypatch):
    out = tmp_path / "o"
    from svd_ms.jobs import ranks
    real = ranks.write_json

    def full_disk(path, obj):
        if Path(path).name == jobs.SUMMARY_NAME:
            raise OSError(28, f"cannot write {str(path)!r} (No space left on device)")
        real(path, obj)
    monkeypatch.setattr(ranks, "write_json", full_disk)
    rc, _, err = run(capsys, out, img(), seed=1)
    assert rc == 1 and "job_summary.json" in err and "No space left" in err


@pytest.mark.parametrize("fmt", ["mp4", "png"])
def test_file_size_limit_fails_the_image_and_rerun_completes(tmp_path, fmt):
    """The fault from the issue: `ulimit -f` stops the writer part-way. The image fails (exit 1),
    nothing stays under the final name, and a rerun without the limit makes the video."""
    rng = np.random.default_rng(0)
    src = tmp_path / "noise.png"
    Image.fromarray(rng.integers(0, 256, (256, 384, 3), dtype=np.uint8)).save(src)
    out = tmp_path / "o"
    script = textwrap.dedent(f"""
        import sys
        from fake_pipeline import FakePipeline
        from svd_ms import jobs
        from svd_ms.params import SVDParams
        job = jobs.BatchJob(jobs.JobSettings(images=[{str(src)!r}], output_dir={str(out)!r}, seed=1, progress=False,
                                             output_format={fmt!r}), SVDParams(config={TINY_CONFIG!r}), FakePipeline)
        sys.exit(job.run())
    """)
    cmd = f"ulimit -f 20; exec {shlex.quote(sys.executable)} -c {shlex.quote(script)}"
    res = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=300, env=ENV)
    assert res.returncode == 1 and "noise.png" in res.stderr and "Traceback" not in res.stderr, res.stderr
    assert sorted(p.name for p in out.iterdir()) == ["job_summary.json"]
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=ENV)
    assert res.returncode == 0, res.stderr
    assert json.loads((out / "noise_seed1.json").read_text())["status"] == "done"


# ---- the pipeline resolves, the job records ------------------------------------------------------

def test_model_defaults_come_from_the_pipeline(tmp_path, img, capsys, monkeypatch):
    """The job resolves no model default itself: unset frames and steps are what the pipeline's
    `resolve` says, and the sidecar records them."""
    real = FakePipeline.resolve
    monkeypatch.setattr(FakePipeline, "resolve", lambda self, p: dict(real(self, p), num_frames=p.num_frames or 5,
                                                                      num_steps=p.num_steps or 4))
    out = tmp_path / "o"
    rc, _, err = run(capsys, out, img(), seed=1)
    assert rc == 0, err
    side = json.loads((out / "photo_seed1.json").read_text())
    assert side["frames"] == 5 and side["resolved"]["num_frames"] == 5 and side["resolved"]["num_steps"] == 4
    assert len(side["timings"]["step_s"]) == 4 and side["pipeline"]["num_frames"] is None


def test_bad_camera_is_refused_once_the_pipeline_resolved_the_frames(tmp_path, img, capsys):
    rc, _, err = run(capsys, tmp_path / "o", img(), seed=1, elevations_deg=10.0)
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert rc == 2 and len(lines) == 1 and "takes no camera path" in lines[0], err


def test_prepare_input_is_the_clis_preparation(img):
    from svd_ms.jobs.batch import prepare_input
    from svd_ms.preparation import load_image

    src = img(size=(300, 200))
    ours, info, warnings = prepare_input(str(src), jobs.JobSettings(images=[str(src)], height=128), orbit=False)
    cli, _, _ = load_image(str(src), 128, None)
    assert ours.shape == (128, 192, 3) and np.array_equal(ours, cli) and info["size"] == [192, 128]
    from svd_ms.preparation import prepare_input as the_one_rule
    square, info, _ = prepare_input(str(src), jobs.JobSettings(images=[str(src)], height=64, keep_background=True),
                                    orbit=True)
    expected = the_one_rule(str(src), orbit=True, height=64, keep_background=True)
    assert square.shape == (64, 64, 3) and np.array_equal(square, expected.pixels) and info == expected.info


def test_video_inputs_with_one_conditioning_image(tmp_path, img, capsys):
    """Video-to-video: each video resampled to the pipeline's frame count, the one --image prepared
    to the video's size as the conditioning image, both recorded and in the reproduce command."""
    from svd_ms import media

    frames = np.stack([np.full((64, 128, 3), 40 * i, np.uint8) for i in range(5)])
    clip = tmp_path / "in" / "pan.mp4"
    clip.parent.mkdir(exist_ok=True)
    media.write_video(frames, clip, "mp4", 7)
    cond = img("cond.png", size=(256, 128))
    out = tmp_path / "o"
    rc, _, err = run(capsys, out, cond, videos=[str(clip)], seed=2,
                     params=SVDParams(config=TINY_CONFIG, strength=0.5))
    assert rc == 0, err
    side = json.loads((out / "pan_seed2.json").read_text())
    assert side["input_kind"] == "video" and side["settings"]["condition_image"] == str(cond)
    assert side["input"]["condition_image"]["size"] == [128, 64] and (side["width"], side["height"]) == (128, 64)
    argv = shlex.split(side["reproduce"])
    assert f"--video={clip}" in argv and f"--image={cond}" in argv and "--SVD.strength=0.5" in argv
