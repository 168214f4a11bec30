"""Tests for image_to_video.py, the command-line entry point.

Fast tests run the CLI in-process with a small stand-in pipeline (same signature as
SVDInferPipeline). The bad-input tests use the real pipeline class: they all fail before
any sampling. The end-to-end tests run the real pipeline on the shared tiny reference
model (../shared/reference/tiny_svd.*) with few steps, once per output format.
"""
import json
import os
import struct
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Optional

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import image_to_video as cli  # noqa: E402

REF = Path(os.environ.get("SVD_MS_REFERENCE", REPO / ".." / "shared" / "reference")).resolve()
TINY_CFG = REF / "tiny_svd.sgm.yaml"
TINY_CKPT = REF / "tiny_svd.safetensors"
TINY_IMG = REF / "tiny_svd.input.png"


class FakeNonFinite(Exception):
    pass


class FakePipeline:
    """Stands in for SVDInferPipeline: same constructor signature, cheap deterministic output."""

    nan = False
    raise_nonfinite = False

    def __init__(self, config: str, checkpoint: Optional[str] = None, num_frames: Optional[int] = None,
                 fps: int = 7, motion_bucket_id: int = 127, noise_aug_strength: float = 0.02,
                 decode_chunk_size: Optional[int] = None, num_steps: Optional[int] = None,
                 amp_level: str = "O0", attention: str = "auto", ff_chunk_size: Optional[int] = None):
        self.frames = num_frames or 3
        self.steps = num_steps or 2
        self.last_timings = {}

    def __call__(self, image, seed=None, latent_noise=None, cond_noise=None, progress=False):
        from svd_ms.errors import NonFiniteError

        if self.raise_nonfinite:
            raise NonFiniteError("non-finite values (NaN/inf) in latents after sampling step 1/2")
        a = np.asarray(image, dtype=np.float32).transpose(2, 0, 1) / 255.0
        rng = np.random.default_rng(seed)
        video = np.stack([np.clip(a * (1 - 0.1 * t) + 0.1 * rng.random(a.shape), 0, 1)
                          for t in range(self.frames)]).astype(np.float32)
        if self.nan:
            video[0, 0, 0, 0] = np.nan
        self.last_timings = {"compile_s": 0.0, "step_s": [0.01] * self.steps, "decode_s": 0.01,
                             "total_s": 0.03}
        return video


def run(capsys, args, pipeline_cls=FakePipeline):
    rc = cli.main([str(a) for a in args], pipeline_cls=pipeline_cls)
    out, err = capsys.readouterr()
    return rc, out, err


def base_args(out_dir, *images, cfg=TINY_CFG):
    return ["--SVD.config", cfg, "--device_target=CPU", "--mode=1", "--progress=false",
            "--output_dir", out_dir, "--image", *images]


def videos_in(d: Path):
    if not d.exists():
        return []
    return sorted(p.name for p in d.iterdir() if p.suffix in (".mp4", ".gif") or p.is_dir()
                  or p.name.startswith(".") and "tmp" in p.name)


@pytest.fixture
def img(tmp_path):
    def make(name="photo.png", size=(384, 256), mode="RGB", color=(200, 120, 40), **save):
        p = tmp_path / "in" / name
        p.parent.mkdir(exist_ok=True)
        im = Image.new("RGB", size, color)
        im.paste((10, 200, 90), (0, 0, size[0] // 2, size[1] // 3))  # something asymmetric
        if mode != "RGB":
            im = im.convert(mode)
        im.save(p, **save)
        return p
    return make


# ----------------------------------------------------------------------------- flags


def test_help_lists_every_flag_with_default(capsys):
    with pytest.raises(SystemExit) as ex:
        cli.main(["--help"], pipeline_cls=FakePipeline)
    assert ex.value.code == 0
    out = capsys.readouterr().out
    for flag in ["--SVD.config", "--SVD.checkpoint", "--SVD.num_frames", "--SVD.fps",
                 "--SVD.motion_bucket_id", "--SVD.noise_aug_strength", "--SVD.decode_chunk_size",
                 "--SVD.num_steps", "--SVD.amp_level", "--mode", "--device_target", "--image",
                 "--output_dir", "--seed", "--output_format", "--overwrite", "--config",
                 "--height", "--width"]:
        assert flag in out, flag
    assert "default: 7" in out and "default: mp4" in out and "default: 127" in out


def test_real_pipeline_flags_are_exposed():
    from svd_ms.pipeline import SVDInferPipeline

    parser = cli.build_parser(SVDInferPipeline)
    dests = {a.dest for a in parser._actions}
    for name in cli._pipeline_params(SVDInferPipeline):
        assert f"SVD.{name}" in dests


def test_yaml_config_file(tmp_path, img, capsys):
    src = img()
    conf = tmp_path / "run.yaml"
    conf.write_text(f"SVD:\n  config: {TINY_CFG}\n  num_frames: 4\n  fps: 9\nseed: 17\n"
                    f"output_format: gif\nimage: [{src}]\noutput_dir: {tmp_path / 'o'}\n"
                    f"device_target: CPU\nmode: 1\n")
    rc, out, err = run(capsys, ["--config", conf, "--progress=false"])
    assert rc == 0, err
    gif = tmp_path / "o" / "photo_seed17.gif"
    side = json.loads((tmp_path / "o" / "photo_seed17.json").read_text())
    assert gif.exists() and side["frames"] == 4 and side["fps"] == 9
    assert side["parameters"]["SVD"]["num_frames"] == 4
    with Image.open(gif) as g:
        assert g.n_frames == 4


def test_print_config_round_trip(tmp_path, img, capsys):
    args = base_args(tmp_path / "o", img()) + ["--seed=8", "--SVD.motion_bucket_id=99"]
    with pytest.raises(SystemExit):
        cli.main([str(a) for a in args] + ["--print_config"], pipeline_cls=FakePipeline)
    conf = tmp_path / "printed.yaml"
    conf.write_text(capsys.readouterr().out)
    rc, _, err = run(capsys, ["--config", conf])
    assert rc == 0, err
    side = json.loads((tmp_path / "o" / "photo_seed8.json").read_text())
    assert side["pipeline"]["motion_bucket_id"] == 99


# ----------------------------------------------------------------------------- inputs


def test_exif_orientation_is_honoured(tmp_path):
    p = tmp_path / "rot.jpg"
    im = Image.new("RGB", (384, 256), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    im.save(p, exif=exif.tobytes(), quality=95)
    arr, info, _ = cli.load_image(str(p))
    assert arr.shape == (384, 256, 3)
    assert info["exif_orientation"] == 6


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P", "L", "I;16", "CMYK"])
def test_modes_become_rgb(img, mode):
    suffix = ".jpg" if mode == "CMYK" else ".png"
    p = img(name=f"m{suffix}", mode=mode if mode != "I;16" else "L")
    if mode == "I;16":
        Image.fromarray((np.arange(256 * 384).reshape(256, 384) % 65535).astype(np.uint16)).save(p)
    arr, info, _ = cli.load_image(str(p))
    assert arr.dtype == np.uint8 and arr.shape == (256, 384, 3)


def test_transparent_pixels_become_white(tmp_path):
    p = tmp_path / "t.png"
    Image.new("RGBA", (128, 64), (0, 0, 0, 0)).save(p)
    arr, info, _ = cli.load_image(str(p))
    assert (arr == 255).all() and "white" in info["conversion"]


def test_sides_brought_to_multiple_of_64_with_warning(img):
    arr, info, warnings = cli.load_image(str(img(size=(500, 333))))
    assert arr.shape == (320, 448, 3)
    assert any("500x333" in w and "448x320" in w for w in warnings)


def test_height_width_resize_and_center_crop(img):
    arr, info, warnings = cli.load_image(str(img(size=(800, 300))), height=576, width=1024)
    assert arr.shape == (576, 1024, 3)
    assert "center-cropped to 1024x576" in info["preprocessing"]
    assert not any("far from" in w for w in warnings)
    arr, _, _ = cli.load_image(str(img(size=(400, 300))), height=128, width=None)
    assert arr.shape == (128, 192, 3)


def test_far_from_training_size_warns(img):
    _, _, warnings = cli.load_image(str(img(size=(256, 256))))
    assert any("far from 1024x576" in w for w in warnings)


def test_image_specs_files_dirs_globs(tmp_path, img):
    a, b = img("a.png"), img("b.jpg")
    (tmp_path / "in" / "notes.txt").write_text("x")
    images, problems = cli.resolve_images([str(tmp_path / "in"), str(a), str(tmp_path / "in" / "*.png"),
                                           str(tmp_path / "none" / "*.png")])
    assert images == sorted([os.path.normpath(str(a)), os.path.normpath(str(b))])
    assert len(problems) == 1 and "no image matches" in problems[0][1]


# ----------------------------------------------------------------------------- outputs


def test_names_sidecar_seeds_and_summary(tmp_path, img, capsys):
    a, b = img("a.png"), img("b.png")
    out = tmp_path / "o"
    rc, stdout, err = run(capsys, base_args(out, a, b) + ["--seed=40"])
    assert rc == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["a_seed40.json", "a_seed40.mp4", "b_seed41.json",
                                                     "b_seed41.mp4", "job_summary.json"]
    side = json.loads((out / "b_seed41.json").read_text())
    assert side["seed"] == 41 and side["base_seed"] == 40 and side["index_in_job"] == 1
    for key in ("versions", "timings", "parameters", "pipeline", "input", "memory", "reproduce"):
        assert key in side
    assert side["versions"]["mindspore"] and "mean_step_s" in side["timings"]
    assert "seed: 40" in stdout and "s/step" in stdout and "peak host mem" in stdout
    summary = json.loads((out / "job_summary.json").read_text())
    assert summary["counts"] == {"done": 2, "skipped": 0, "failed": 0}


def test_random_seed_is_printed_and_recorded(tmp_path, img, capsys):
    out = tmp_path / "o"
    rc, stdout, _ = run(capsys, base_args(out, img()))
    assert rc == 0
    seed = int(stdout.split("seed: ")[1].split()[0].rstrip(";"))
    assert (out / f"photo_seed{seed}.mp4").exists()
    assert json.loads((out / f"photo_seed{seed}.json").read_text())["seed"] == seed


def test_same_seed_same_video_and_no_overwrite(tmp_path, img, capsys):
    src = img()
    out = tmp_path / "o"
    rc, _, _ = run(capsys, base_args(out, src) + ["--seed=5", "--output_format=png"])
    assert rc == 0
    frames = out / "photo_seed5"
    first = {p.name: p.read_bytes() for p in frames.iterdir()}
    stamp = {p.name: p.stat().st_mtime_ns for p in out.rglob("*") if p.name != "job_summary.json"}
    rc, stdout, _ = run(capsys, base_args(out, src) + ["--seed=5", "--output_format=png"])
    assert rc == 0 and "skip" in stdout
    assert stamp == {p.name: p.stat().st_mtime_ns for p in out.rglob("*") if p.name != "job_summary.json"}
    rc, _, _ = run(capsys, base_args(out, src) + ["--seed=5", "--output_format=png", "--overwrite=true"])
    assert rc == 0
    assert first == {p.name: p.read_bytes() for p in frames.iterdir()}
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporaries left


def test_video_without_sidecar_is_not_overwritten(tmp_path, img, capsys):
    out = tmp_path / "o"
    out.mkdir()
    (out / "photo_seed1.mp4").write_bytes(b"mine")
    rc, _, err = run(capsys, base_args(out, img()) + ["--seed=1"])
    assert rc == 1 and "--overwrite" in err
    assert (out / "photo_seed1.mp4").read_bytes() == b"mine"


def test_one_bad_image_others_still_run(tmp_path, img, capsys):
    good = img("good.png")
    bad = tmp_path / "in" / "bad.png"
    bad.write_bytes(b"not a png at all")
    out = tmp_path / "o"
    rc, _, err = run(capsys, base_args(out, good, bad) + ["--seed=0"])
    assert rc == 1
    assert (out / "good_seed1.mp4").exists() and not (out / "bad_seed0.mp4").exists()
    assert "bad.png" in err and "Traceback" not in err
    summary = json.loads((out / "job_summary.json").read_text())
    assert summary["counts"]["failed"] == 1 and "bad.png" in summary["failed"][0]["reason"]


@pytest.mark.parametrize("how", ["nan", "raise"])
def test_non_finite_output_is_reported_not_written(tmp_path, img, capsys, monkeypatch, how):
    monkeypatch.setattr(FakePipeline, "nan" if how == "nan" else "raise_nonfinite", True)
    out = tmp_path / "o"
    rc, _, err = run(capsys, base_args(out, img()) + ["--seed=3"])
    assert rc == 1 and "photo.png" in err and "Traceback" not in err
    assert ("NaN" in err) and ("decoded frames" in err if how == "nan" else "latents" in err)
    assert videos_in(out) == []


# ----------------------------------------------------------------------------- bad input


def _torch_zip(p: Path):
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("archive/data.pkl", b"\x80\x02}q\x00.")


def _safetensors(p: Path, tensors):
    header, blobs, off = {}, [], 0
    for name, arr in tensors.items():
        b = arr.astype(np.float32).tobytes()
        header[name] = {"dtype": "F32", "shape": list(arr.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header).encode()
    p.write_bytes(struct.pack("<Q", len(h)) + h + b"".join(blobs))


BAD_CASES = {
    # name: (setup(tmp_path, img) -> extra args, text the message must contain, exit code)
    "missing image": (lambda t, img: ["--image", t / "nope.png"], "nope.png", 1),
    "corrupt image": (lambda t, img: (t / "junk.png").write_bytes(os.urandom(500)) and
                      ["--image", t / "junk.png"], "junk.png", 1),
    "truncated image": (lambda t, img: (t / "cut.png").write_bytes(img("full.png").read_bytes()[:400])
                        and ["--image", t / "cut.png"], "cut.png", 1),
    "tiny image": (lambda t, img: ["--image", img("small.png", size=(300, 50))], "small.png", 1),
    "num_frames 0": (lambda t, img: ["--SVD.num_frames=0"], "--SVD.num_frames", 2),
    "decode_chunk_size 0": (lambda t, img: ["--SVD.decode_chunk_size=0"], "--SVD.decode_chunk_size", 2),
    "fps 0": (lambda t, img: ["--SVD.fps=0"], "--SVD.fps", 2),
    "fps 61": (lambda t, img: ["--SVD.fps=61"], "--SVD.fps", 2),
    "motion -1": (lambda t, img: ["--SVD.motion_bucket_id=-1"], "--SVD.motion_bucket_id", 2),
    "motion 256": (lambda t, img: ["--SVD.motion_bucket_id=256"], "--SVD.motion_bucket_id", 2),
    "checkpoint missing": (lambda t, img: ["--SVD.checkpoint", t / "gone.ckpt"], "gone.ckpt", 2),
    "checkpoint torch zip": (lambda t, img: _torch_zip(t / "model.ckpt") or
                             ["--SVD.checkpoint", t / "model.ckpt"], "svd_tools/convert.py", 2),
    "checkpoint torch .pt": (lambda t, img: (t / "w.pt").write_bytes(b"\x80\x02ab") and
                             ["--SVD.checkpoint", t / "w.pt"], "svd_tools/convert.py", 2),
    "checkpoint does not fit": (lambda t, img: _safetensors(t / "other.safetensors", {"x.weight": np.ones(3)})
                                or ["--SVD.checkpoint", t / "other.safetensors"], "does not fit", 2),
    "output dir not writable": (lambda t, img: (t / "afile").write_text("x") and
                                ["--output_dir", t / "afile" / "sub"], "--output_dir", 2),
    "dist_timeout 0": (lambda t, img: ["--dist_timeout=0"], "--dist_timeout", 2),
}


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_bad_input_message_exit_code_no_output(tmp_path, img, capsys, case):
    from svd_ms.pipeline import SVDInferPipeline

    setup, needle, code = BAD_CASES[case]
    extra = [str(a) for a in setup(tmp_path, img)]
    args = base_args(tmp_path / "out", img("ok.png")) + extra
    rc, out, err = run(capsys, args, pipeline_cls=SVDInferPipeline)
    assert rc == code, (rc, err)
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert lines and any(needle in ln for ln in lines), err
    assert "Traceback" not in err and "Traceback" not in out
    assert videos_in(tmp_path / "out") == []


@pytest.mark.parametrize("flag,needle", [("--mode=3", '"mode"'), ("--seed=abc", '"seed"'),
                                         ("--no_such_flag=1", "--no_such_flag")])
def test_flag_parse_error_is_one_line(tmp_path, img, capsys, flag, needle):
    rc, out, err = run(capsys, base_args(tmp_path / "out", img("ok.png")) + [flag])
    assert rc == 2, (rc, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], err
    assert "usage:" not in out + err


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
    rc, _, err = run(capsys, base_args(tmp_path / "out", p))
    assert rc == 1 and "locked.png" in err and "permission" in err


def test_process_exit_code_and_no_traceback(tmp_path, img):
    """The real script as a process: a flag out of range and a corrupt image."""
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff garbage")
    for extra, code, needle in ((["--SVD.fps=0", "--image", img()], 2, "--SVD.fps"),
                                (["--image", bad], 1, "bad.jpg")):
        res = subprocess.run([sys.executable, str(REPO / "image_to_video.py"), "--SVD.config",
                              str(TINY_CFG), "--device_target=CPU", "--output_dir", str(tmp_path / "o")]
                             + [str(e) for e in extra], capture_output=True, text=True, timeout=300,
                             cwd=tmp_path)
        assert res.returncode == code, res.stderr
        assert needle in res.stderr and "Traceback" not in res.stderr
        assert videos_in(tmp_path / "o") == []


# ----------------------------------------------------------------------------- end to end

E2E = dict(frames=5, steps=2, seed=1234)
# The PNG-vs-API comparison runs on a 192x128 center crop (--width/--height) to stay cheap on CPU;
# the mp4 run keeps the reference image's own 384x256.
SMALL = dict(width=192, height=128)


def _cli_process(out_dir: Path, fmt: str, extra=()):
    cmd = [sys.executable, str(REPO / "image_to_video.py"), "--SVD.config", str(TINY_CFG),
           "--SVD.checkpoint", str(TINY_CKPT), f"--SVD.num_frames={E2E['frames']}",
           f"--SVD.num_steps={E2E['steps']}", "--SVD.decode_chunk_size=3",
           "--device_target=CPU", f"--seed={E2E['seed']}", f"--output_format={fmt}",
           "--output_dir", str(out_dir), "--image", str(TINY_IMG), *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=3600, cwd=REPO)


@pytest.fixture(scope="module")
def e2e_mp4(tmp_path_factory):
    assert TINY_CKPT.exists(), f"shared tiny reference missing: {TINY_CKPT}"
    out = tmp_path_factory.mktemp("e2e_mp4")
    return out, _cli_process(out, "mp4", ["--mode=0"])  # the default: graph mode


@pytest.fixture(scope="module")
def e2e_png(tmp_path_factory):
    assert TINY_CKPT.exists(), f"shared tiny reference missing: {TINY_CKPT}"
    out = tmp_path_factory.mktemp("e2e_png")
    # PyNative, like the API run it is compared with
    return out, _cli_process(out, "png", ["--mode=1", f"--width={SMALL['width']}",
                                          f"--height={SMALL['height']}"])


@pytest.fixture(scope="module")
def api_video():
    """The API on the same input, prepared the way the CLI prepares it."""
    assert TINY_CKPT.exists(), f"shared tiny reference missing: {TINY_CKPT}"
    import mindspore as ms
    from svd_ms.pipeline import SVDInferPipeline

    from svd_ms import policy
    policy.select_device("CPU")
    ms.set_context(mode=ms.PYNATIVE_MODE)
    pipe = SVDInferPipeline(str(TINY_CFG), str(TINY_CKPT), num_frames=E2E["frames"],
                            num_steps=E2E["steps"], decode_chunk_size=3)
    with Image.open(TINY_IMG) as im:
        full = np.asarray(im.convert("RGB"))
    # --width=192 --height=128 on a 384x256 image is an exact 2x downscale, no crop
    small = np.asarray(Image.fromarray(full).resize((SMALL["width"], SMALL["height"]),
                                                    Image.Resampling.LANCZOS))
    cli_small, _, _ = cli.load_image(str(TINY_IMG), SMALL["height"], SMALL["width"])
    assert np.array_equal(small, cli_small)
    return cli.to_uint8(pipe(small, seed=E2E["seed"]))


def test_e2e_mp4_frames_size_readable(e2e_mp4):
    import imageio

    out, res = e2e_mp4
    assert res.returncode == 0, res.stderr[-3000:]
    stem = f"tiny_svd.input_seed{E2E['seed']}"
    assert sorted(p.name for p in out.iterdir()) == sorted([f"{stem}.mp4", f"{stem}.json",
                                                            "job_summary.json"])
    reader = imageio.get_reader(str(out / f"{stem}.mp4"), format="FFMPEG")
    try:
        meta = reader.get_meta_data()
        frames = np.stack([f for f in reader])
    finally:
        reader.close()
    assert frames.shape == (E2E["frames"], 256, 384, 3)
    assert meta["codec"] == "h264" and meta["pix_fmt"].startswith("yuv420p") and meta["fps"] == 7
    assert frames.std() > 1.0  # not a blank video
    side = json.loads((out / f"{stem}.json").read_text())
    assert side["frames"] == E2E["frames"] and side["seed"] == E2E["seed"]
    assert side["width"] == 384 and side["height"] == 256 and side["untrained"] is False
    assert len(side["timings"]["step_s"]) == E2E["steps"]
    assert "s/step" in res.stdout and "decode" in res.stdout and "peak host mem" in res.stdout
    assert "compile" in res.stdout and side["timings"]["compile_s"] is not None
    assert f"seed: {E2E['seed']}" in res.stdout and "mode 0 (graph)" in res.stdout


def test_e2e_png_frames_equal_api(e2e_png, api_video):
    out, res = e2e_png
    assert res.returncode == 0, res.stderr[-3000:]
    folder = out / f"tiny_svd.input_seed{E2E['seed']}"
    files = sorted(folder.glob("frame_*.png"))
    assert len(files) == E2E["frames"]
    frames = np.stack([np.asarray(Image.open(f)) for f in files])
    assert frames.shape == api_video.shape == (E2E["frames"], SMALL["height"], SMALL["width"], 3)
    assert np.abs(frames.astype(np.int16) - api_video.astype(np.int16)).max() <= 1
