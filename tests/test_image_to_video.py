"""Tests for image_to_video.py, the command-line entry point.

Flags, config files, exit codes and one-line errors; the job logic itself is tested through
svd_ms.jobs (tests/jobs/). Fast tests run main() in-process with a stand-in pipeline
(tests/fake_pipeline.py). The bad-input tests use the real pipeline: they all fail before any
sampling. The end-to-end tests run the real pipeline on the shared tiny reference
model (../shared/reference/tiny_svd.*) with few steps, once per output format.
"""
import importlib.util
import json
import os
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fake_pipeline import FakePipeline

REPO = Path(__file__).resolve().parents[1]
REF = Path(os.environ.get("SVD_MS_REFERENCE", REPO / ".." / "shared" / "reference")).resolve()
TINY_CFG = REF / "tiny_svd.sgm.yaml"
TINY_CKPT = REF / "tiny_svd.safetensors"
TINY_IMG = REF / "tiny_svd.input.png"


def _load_cli():
    """The entry script as a module (it is a script, not part of the package)."""
    spec = importlib.util.spec_from_file_location("image_to_video", REPO / "image_to_video.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


cli = _load_cli()


def run(capsys, args, pipeline_factory=FakePipeline):
    rc = cli.main([str(a) for a in args], pipeline_factory=pipeline_factory)
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


# ----------------------------------------------------------------------------- flags


def test_help_lists_every_flag_with_default(capsys):
    with pytest.raises(SystemExit) as ex:
        cli.main(["--help"], pipeline_factory=FakePipeline)
    assert ex.value.code == 0
    out = capsys.readouterr().out
    for flag in ["--SVD.config", "--SVD.checkpoint", "--SVD.num_frames", "--SVD.fps",
                 "--SVD.motion_bucket_id", "--SVD.noise_aug_strength", "--SVD.decode_chunk_size",
                 "--SVD.num_steps", "--SVD.amp_level", "--mode", "--device_target", "--image",
                 "--output_dir", "--seed", "--output_format", "--overwrite", "--config",
                 "--height", "--width"]:
        assert flag in out, flag
    assert "default: 7" in out and "default: mp4" in out and "default: 127" in out


def test_every_parameter_is_a_flag():
    import dataclasses
    from svd_ms.params import SVDParams

    dests = {a.dest for a in cli.build_parser()._actions}
    for f in dataclasses.fields(SVDParams):
        assert f"SVD.{f.name}" in dests


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
        cli.main([str(a) for a in args] + ["--print_config"], pipeline_factory=FakePipeline)
    conf = tmp_path / "printed.yaml"
    conf.write_text(capsys.readouterr().out)
    rc, _, err = run(capsys, ["--config", conf])
    assert rc == 0, err
    side = json.loads((tmp_path / "o" / "photo_seed8.json").read_text())
    assert side["pipeline"]["motion_bucket_id"] == 99


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
                             ["--SVD.checkpoint", t / "model.ckpt"], "svd_tools.convert", 2),
    "checkpoint torch .pt": (lambda t, img: (t / "w.pt").write_bytes(b"\x80\x02ab") and
                             ["--SVD.checkpoint", t / "w.pt"], "svd_tools.convert", 2),
    "checkpoint does not fit": (lambda t, img: _safetensors(t / "other.safetensors", {"x.weight": np.ones(3)})
                                or ["--SVD.checkpoint", t / "other.safetensors"], "does not fit", 2),
    "output dir not writable": (lambda t, img: (t / "afile").write_text("x") and
                                ["--output_dir", t / "afile" / "sub"], "--output_dir", 2),
    "dist_timeout 0": (lambda t, img: ["--dist_timeout=0"], "--dist_timeout", 2),
    "binary --config": (lambda t, img: (t / "run.yaml").write_bytes(bytes(range(128, 256))) and
                        ["--config", t / "run.yaml"], "run.yaml", 2),
    "num_steps absurd": (lambda t, img: ["--SVD.num_steps=1000000000"], "--SVD.num_steps", 2),
    "num_frames beyond memory": (lambda t, img: ["--SVD.num_frames=100000"], "GiB of memory", 1),
    "sampler unknown": (lambda t, img: ["--SVD.sampler=nope"], "--SVD.sampler", 2),
    "guider unknown": (lambda t, img: ["--SVD.guider=wiggly"], "--SVD.guider", 2),
    "guidance negative": (lambda t, img: ["--SVD.max_guidance_scale=-2"], "--SVD.max_guidance_scale", 2),
    "sampler parameter unknown": (lambda t, img: ["--SVD.sampler=euler", "--SVD.sampler_params={eta: 1}"],
                                  "'eta'", 2),
    "unet_weights missing": (lambda t, img: ["--SVD.unet_weights", t / "lcm.safetensors"], "lcm.safetensors", 2),
}


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_bad_input_message_exit_code_no_output(tmp_path, img, capsys, case):
    setup, needle, code = BAD_CASES[case]
    extra = [str(a) for a in setup(tmp_path, img)]
    args = base_args(tmp_path / "out", img("ok.png")) + extra
    rc, out, err = run(capsys, args, pipeline_factory=None)  # the real pipeline
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
    from svd_ms.preparation import load_image
    from svd_ms.pipeline import SVDInferPipeline
    from svd_ms.runtime import setup_device

    setup_device("CPU", mode=1)
    pipe = SVDInferPipeline(str(TINY_CFG), str(TINY_CKPT), num_frames=E2E["frames"],
                            num_steps=E2E["steps"], decode_chunk_size=3)
    with Image.open(TINY_IMG) as im:
        full = np.asarray(im.convert("RGB"))
    # --width=192 --height=128 on a 384x256 image is an exact 2x downscale, no crop
    small = np.asarray(Image.fromarray(full).resize((SMALL["width"], SMALL["height"]),
                                                    Image.Resampling.LANCZOS))
    cli_small, _, _ = load_image(str(TINY_IMG), SMALL["height"], SMALL["width"])
    assert np.array_equal(small, cli_small)
    from svd_ms.media import to_uint8
    return to_uint8(pipe(small, seed=E2E["seed"]))


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


def _png_frames(folder: Path) -> np.ndarray:
    return np.stack([np.asarray(Image.open(f)) for f in sorted(folder.glob("frame_*.png"))])


def test_sampler_flag_changes_the_video_and_the_record_remakes_it(tmp_path, img, capsys):
    """--SVD.sampler on the real tiny model: with the same seed and image, euler and heun make
    different videos (the flag is not ignored), and the heun run's sidecar, fed back into the API
    as it was recorded (SVDParams from its `pipeline` values, generate(path) with its seed),
    makes the heun video frame for frame."""
    from svd_ms.media import to_uint8
    from svd_ms.params import SVDParams
    from svd_ms.pipeline import SVDInferPipeline

    src = img(size=(128, 64))
    videos, sidecars = {}, {}
    for sampler in ("euler", "heun"):
        out = tmp_path / sampler
        args = base_args(out, src) + [
            "--SVD.checkpoint", TINY_CKPT, "--SVD.num_frames=2", "--SVD.num_steps=2", "--seed=5",
            "--output_format=png", f"--SVD.sampler={sampler}", "--SVD.guider=triangle",
            "--SVD.min_guidance_scale=1.0", "--SVD.max_guidance_scale=2.0"]
        rc, _, err = run(capsys, args, pipeline_factory=None)
        assert rc == 0, err
        videos[sampler] = _png_frames(out / "photo_seed5")
        sidecars[sampler] = json.loads((out / "photo_seed5.json").read_text())
    apart = int(np.abs(videos["euler"].astype(int) - videos["heun"].astype(int)).max())
    print(f"[cli] euler vs heun, same seed: max abs difference {apart} (must be > 0)")
    assert apart > 0
    side = sidecars["heun"]
    assert side["settings"]["sampler"] == "heun" and side["settings"]["guider"] == "triangle"
    assert "--SVD.sampler=heun" in side["reproduce"] and "--SVD.max_guidance_scale=2.0" in side["reproduce"]
    api = SVDInferPipeline(params=SVDParams(**side["pipeline"]))
    again = to_uint8(api.generate(side["input"]["path"], seed=side["seed"]).video)
    worst = int(np.abs(again.astype(int) - videos["heun"].astype(int)).max())
    print(f"[cli] recorded heun run through the API: max abs difference {worst} (bound 0)")
    assert worst == 0


def test_rerun_with_other_sampler_params_is_refused_not_skipped(tmp_path, img, capsys):
    """The sampler's own parameters are settings like any other: a rerun with other
    --SVD.sampler_params is refused by name and leaves the video alone; the same ones are skipped."""
    out, src = tmp_path / "o", img()
    args = base_args(out, src) + ["--seed=3", "--SVD.sampler=euler"]
    rc, _, err = run(capsys, args + ['--SVD.sampler_params={"s_churn": 0.5}'])
    assert rc == 0, err
    video, sidecar = out / "photo_seed3.mp4", out / "photo_seed3.json"
    before = (video.read_bytes(), sidecar.read_text())
    side = json.loads(before[1])
    assert side["settings"]["sampler_params"] == {"s_churn": 0.5} == side["pipeline"]["sampler_params"]
    assert """'--SVD.sampler_params={"s_churn": 0.5}'""" in side["reproduce"]
    rc, stdout, err = run(capsys, args + ['--SVD.sampler_params={"s_churn": 1.0}'])
    assert rc == 1 and "sampler_params differ" in err and "skip '" not in stdout, err
    assert (video.read_bytes(), sidecar.read_text()) == before
    rc, stdout, err = run(capsys, args + ['--SVD.sampler_params={"s_churn": 0.5}'])
    assert rc == 0 and "skip '" in stdout, err
