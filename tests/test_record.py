"""svd_ms.record: the one record of a video. Values kept as values (dicts included), the settings
comparison, the output check, and the reproduce command -- parsed back by the CLI to the same
settings, and run as printed it makes the identical video (the shared tiny reference model)."""
import importlib.util
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from conftest import ROOT, TINY_CONFIG, TINY_WEIGHTS
from svd_ms import record
from svd_ms.params import SVDParams


def _cli():
    spec = importlib.util.spec_from_file_location("image_to_video", os.path.join(ROOT, "image_to_video.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_plain_keeps_values():
    value = {"d": {"s_churn": np.float32(0.5)}, "l": (1, np.int64(2)), "a": np.arange(3), "p": Path("/x/y")}
    assert record.plain(value) == {"d": {"s_churn": 0.5}, "l": [1, 2], "a": [0, 1, 2], "p": "/x/y"}


def test_params_values_keep_dicts_and_lists(tmp_path):
    lora = tmp_path / "style.safetensors"
    lora.write_bytes(b"")
    params = SVDParams(config=TINY_CONFIG, sampler="euler", sampler_params={"s_churn": 0.5, "s_noise": 1.0},
                       lora=[f"{lora}:0.5"], num_clips=2)
    values = record.params_values(params)
    assert values["sampler_params"] == {"s_churn": 0.5, "s_noise": 1.0}  # never the placeholder "<dict>"
    assert values["lora"] == [f"{lora}:0.5"] and values["num_clips"] == 2 and values["strength"] is None
    assert json.loads(json.dumps(values)) == values
    assert set(values) == set(params.to_dict())


def test_video_settings_name_files_absolutely(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "w.safetensors").write_bytes(b"")
    params = SVDParams(config=os.path.relpath(TINY_CONFIG), lora=["w.safetensors:0.25"])
    settings = record.video_settings(params, {"height": 64, "width": None, "output_format": "png"})
    assert settings["config"] == os.path.abspath(TINY_CONFIG)
    assert settings["lora"] == [f"{tmp_path / 'w.safetensors'}:0.25"]
    assert (settings["height"], settings["width"], settings["output_format"]) == (64, None, "png")


def test_differing_settings_names_the_key():
    base = record.video_settings(SVDParams(config=TINY_CONFIG, sampler="euler", sampler_params={"s_churn": 0.5}),
                                 {"height": 64})
    other = record.video_settings(SVDParams(config=TINY_CONFIG, sampler="euler", sampler_params={"s_churn": 1.0}),
                                  {"height": 64})
    assert record.differing_settings(base, base) == []
    assert record.differing_settings(base, other) == ["sampler_params"]
    assert record.differing_settings(base, dict(base, height=128, fps=8)) == ["fps", "height"]


def test_a_setting_an_older_record_lacks_counts_as_its_default():
    now = record.video_settings(SVDParams(config=TINY_CONFIG), {"height": None})
    older = {k: v for k, v in now.items() if k not in ("num_clips", "strength", "sampler_params")}
    assert record.differing_settings(older, now) == []
    assert record.differing_settings(older, dict(now, num_clips=3)) == ["num_clips"]


def test_reproduce_command_parses_back_to_the_same_settings(tmp_path):
    lora = tmp_path / "a b.safetensors"  # a space: the command must quote it
    lora.write_bytes(b"")
    params = SVDParams(config=TINY_CONFIG, checkpoint=TINY_WEIGHTS, num_frames=2, sampler="euler",
                       sampler_params={"s_churn": 0.5, "s_noise": 1.003}, lora=[f"{lora}:0.5"],
                       min_guidance_scale=1.0, max_guidance_scale=2.0, noise_aug_strength=1e-5)
    flags = {"height": 64, "width": None, "elevations_deg": [0.0, 5.0], "keep_background": True, "seed": 3,
             "output_dir": str(tmp_path / "o")}
    command = record.reproduce_command(params, [("image", str(tmp_path / "x y.png"))], flags)
    argv = shlex.split(command)
    assert argv[:2] == ["python", str(record.SCRIPT)] and Path(argv[1]).is_file()
    cli = _cli()
    cfg = cli.build_parser().parse_args(argv[2:])
    parsed = cli._svd_params(cfg)
    assert parsed.sampler_params == params.sampler_params
    assert record.absolute_params_values(parsed) == record.absolute_params_values(params)
    assert (cfg.height, cfg.width, cfg.elevations_deg, cfg.keep_background, cfg.seed) == (64, None, [0.0, 5.0],
                                                                                          True, 3)
    assert cfg.image == [str(tmp_path / "x y.png")] and cfg.output_dir == str(tmp_path / "o")


def test_file_digest_of_a_file_and_a_folder(tmp_path):
    f = tmp_path / "v.mp4"
    f.write_bytes(b"abc")
    import hashlib
    assert record.file_digest(f) == hashlib.sha256(b"abc").hexdigest()
    d = tmp_path / "frames"
    d.mkdir()
    (d / "frame_0.png").write_bytes(b"1")
    first = record.file_digest(d)
    (d / "frame_0.png").write_bytes(b"2")
    assert record.file_digest(d) != first


def test_new_and_complete_record(tmp_path):
    params = SVDParams(config=TINY_CONFIG, fps=9, sampler="euler", sampler_params={"s_churn": 0.5})
    video = tmp_path / "a_seed1.mp4"
    frames = np.zeros((3, 64, 128, 3), np.uint8)
    settings = record.video_settings(params, {"height": 64})
    rec = record.new_record(video_path=video, output_format="mp4", frames=frames, fps=params.fps, seed=1,
                            params=params, settings=settings, resolved={"num_frames": 3, "num_steps": 2},
                            input_info={"path": "a.png"}, untrained=True, reproduce="python x", source="test",
                            context={"versions": {"python": "3"}, "device_target": "CPU", "mode": 1}, extra_key=5)
    assert rec["status"] == "writing" and (rec["frames"], rec["height"], rec["width"], rec["fps"]) == (3, 64, 128, 9)
    assert rec["settings"]["sampler_params"] == {"s_churn": 0.5} == rec["pipeline"]["sampler_params"]
    assert rec["resolved"]["num_steps"] == 2 and rec["extra_key"] == 5 and rec["device_target"] == "CPU"
    assert not record.is_complete(rec, video)
    video.write_bytes(b"video")
    done = record.complete_record(rec, video, record.timings({"step_s": [1.0, 3.0]}, write_s=0.5))
    assert done["status"] == "done" and done["timings"]["mean_step_s"] == 2.0 and done["timings"]["write_s"] == 0.5
    assert record.is_complete(done, video)
    video.write_bytes(b"other")
    assert not record.is_complete(done, video)  # the output check catches a changed file


# ---- the reproduce command, run as printed ----------------------------------------------------

def test_reproduce_command_run_as_printed_makes_the_identical_video(tmp_path, capsys):
    """A real run of the tiny reference model with a sampler dict; the sidecar's command, run by the
    shell exactly as printed (from another directory, with the first outputs moved away), makes
    the same frames bit for bit and the same sidecar settings."""
    src = tmp_path / "in" / "pic.png"
    src.parent.mkdir()
    with Image.open(os.path.join(os.path.dirname(TINY_CONFIG), "tiny_svd.input.png")) as im:
        im.convert("RGB").crop((64, 64, 192, 128)).save(src)  # 128x64: cheap
    out = tmp_path / "out"
    rc = _cli().main(["--SVD.config", TINY_CONFIG, "--SVD.checkpoint", TINY_WEIGHTS, "--SVD.num_frames=2",
                      "--SVD.num_steps=2", "--SVD.sampler=euler", '--SVD.sampler_params={"s_churn": 0.5}',
                      "--device_target=CPU", "--mode=1", "--progress=false", "--seed=11", "--output_format=png",
                      "--output_dir", str(out), "--image", str(src)])
    assert rc == 0, capsys.readouterr().err
    first = json.loads((out / "pic_seed11.json").read_text())
    assert first["settings"]["sampler_params"] == {"s_churn": 0.5}
    print(f"[record] reproduce: {first['reproduce']}")
    frames = {p.name: np.asarray(Image.open(p)) for p in sorted((out / "pic_seed11").iterdir())}
    os.rename(out, tmp_path / "first")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    res = subprocess.run(["bash", "-c", first["reproduce"]], cwd=elsewhere, env=env, capture_output=True, text=True,
                         timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    again = {p.name: np.asarray(Image.open(p)) for p in sorted((out / "pic_seed11").iterdir())}
    assert list(again) == list(frames) and len(frames) == 2
    worst = max(int(np.abs(again[k].astype(int) - frames[k].astype(int)).max()) for k in frames)
    print(f"[record] reproduced frames: max abs difference {worst} (bound 0)")
    assert worst == 0
    second = json.loads((out / "pic_seed11.json").read_text())
    assert record.differing_settings(first["settings"], second["settings"]) == []
    assert second["video_sha256"] == first["video_sha256"] and second["reproduce"] == first["reproduce"]
