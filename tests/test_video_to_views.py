"""video_to_views.py, the SV4D 2.0 entry script: a folder of frames in, one mp4 per view, a grid
video and a sidecar out; bad input is one line on stderr, exit code 2 and no output file."""
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import video_to_views
from conftest import REFERENCE
from svd_ms import media

CONFIG = os.path.join(REFERENCE, "tiny_sv4d2.sgm.yaml")
WEIGHTS = os.path.join(REFERENCE, "tiny_sv4d2.safetensors")


@pytest.fixture(scope="module")
def frames_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("object")
    frames = np.load(os.path.join(REFERENCE, "tiny_sv4d2.reference.npz"))["input_frames"]
    for i, frame in enumerate(frames[:6]):
        Image.fromarray(frame).save(folder / f"{i:04d}.png")
    return folder


def run(args, capsys):
    code = video_to_views.main(["--mode=1", f"--SVD.config={CONFIG}", "--SVD.num_steps=1", "--size=64"] + args)
    return code, capsys.readouterr().err


def test_writes_one_video_per_view_a_grid_and_a_sidecar(frames_dir, tmp_path, capsys):
    out = tmp_path / "out"
    code, err = run([f"--video={frames_dir}", f"--output_dir={out}", f"--SVD.checkpoint={WEIGHTS}", "--seed=5",
                     "--elevations_deg=[0, 5, 5, 5, 5]"], capsys)
    assert code == 0, err
    name = frames_dir.name
    for v in range(1, 5):
        assert media.read_video_shape(out / f"{name}_v{v:03d}.mp4", "mp4") == (6, 64, 64)
    assert media.read_video_shape(out / f"{name}_grid.mp4", "mp4") == (6, 64, 5 * 64)
    record = json.loads((out / f"{name}.json").read_text())
    assert record["seed"] == 5 and record["frames"] == 6 and record["checkpoint"] == WEIGHTS
    assert record["settings"]["chunk_starts"] == [0, 1] and record["settings"]["num_steps"] == 1
    assert record["camera"]["elevations_deg"] == [0, 5, 5, 5, 5]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"{name}_v{v:03d}.mp4" for v in range(1, 5)] + [f"{name}_grid.mp4", f"{name}.json"])
    code, err = run([f"--video={frames_dir}", f"--output_dir={out}", f"--SVD.checkpoint={WEIGHTS}"], capsys)
    assert code == 2 and "exists; pass --overwrite" in err and err.count("\n") == 1


@pytest.mark.parametrize("args,message", [
    (["--video=missing.mp4"], "--video='missing.mp4' does not exist"),
    (["--azimuths_deg=[0, 90]"], "azimuths_deg: give 5 numbers"),
    (["--max_frames=0"], "max_frames must be a positive integer"),
    (["--seed=-1"], "seed=-1 must be an integer"),
    (["--SVD.config=nowhere.yaml"], "does not exist"),
])
def test_bad_input_is_one_line_and_writes_nothing(frames_dir, tmp_path, capsys, args, message):
    out = tmp_path / "out"
    video = [] if any(a.startswith("--video") for a in args) else [f"--video={frames_dir}"]
    code, err = run(video + args + [f"--output_dir={out}"], capsys)
    assert code == 2
    assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
    assert not out.exists() or not any(out.iterdir())
