"""svd_ms.jobs.records: which job flags belong to a video's settings, the reproduce command of one
input (absolute paths, device and mode, the seed used) and the sidecar of one input."""
import os
import shlex
from types import SimpleNamespace

import numpy as np

from conftest import REFERENCE, TINY_CONFIG
from svd_ms.jobs.records import JobRecords
from svd_ms.jobs.settings import JobSettings
from svd_ms.params import SVDParams


def test_settings_hold_every_value_and_the_job_flags_that_shape_the_video(tmp_path):
    params = SVDParams(config=TINY_CONFIG, sampler="euler", sampler_params={"s_churn": 0.5})
    rec = JobRecords(params, JobSettings(images=["a.png"], height=64, output_dir=str(tmp_path)), False, "CPU")
    settings = rec.video_settings()
    assert settings["sampler_params"] == {"s_churn": 0.5} and settings["height"] == 64 and settings["width"] is None
    assert settings["config"] == os.path.abspath(TINY_CONFIG) and settings["output_format"] == "mp4"
    assert "output_dir" not in settings and "elevations_deg" not in settings and "condition_image" not in settings
    orbit = JobRecords(params, JobSettings(images=["a.png"], elevations_deg=5.0), True, "CPU").video_settings()
    assert orbit["elevations_deg"] == 5.0 and orbit["keep_background"] is False
    video = JobRecords(params, JobSettings(images=[], videos=["v.mp4"]), False, "CPU")
    video.condition_image = "/data/cond.png"
    assert video.video_settings()["condition_image"] == "/data/cond.png"


def test_reproduce_command_of_one_input(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    params = SVDParams(config=TINY_CONFIG, num_frames=3)
    rec = JobRecords(params, JobSettings(images=["a.png"], output_dir="o", mode=1, output_format="gif"), False, "CPU")
    argv = shlex.split(rec.reproduce("in/a.png", 9))
    assert f"--image={tmp_path / 'in' / 'a.png'}" in argv and f"--output_dir={tmp_path / 'o'}" in argv
    for flag in ("--seed=9", "--mode=1", "--device_target=CPU", "--output_format=gif", "--SVD.num_frames=3"):
        assert flag in argv
    assert not any(a.startswith(("--height", "--keep_background")) for a in argv)
    video = JobRecords(params, JobSettings(images=[], videos=["v.mp4"]), False, "CPU")
    video.condition_image = "/data/cond.png"
    argv = shlex.split(video.reproduce("/data/v.mp4", 1))
    assert "--video=/data/v.mp4" in argv and "--image=/data/cond.png" in argv


def test_sidecar_of_one_input_records_the_seed_used_and_its_place():
    params = SVDParams(config=os.path.join(REFERENCE, "tiny_sv3d_p.sgm.yaml"))
    rec = JobRecords(params, JobSettings(images=["a.png"]), True, "CPU")
    entry = {"image": "/in/a.png", "index": 2, "seed": 12, "base_seed": 10, "output": "/o/a_seed12.mp4"}
    result = SimpleNamespace(seed=12, camera={"elevations_deg": np.array([5.0, 5.0])})
    side = rec.new(entry, np.zeros((2, 64, 64, 3), np.uint8), {"path": "/in/a.png"}, result, True,
                   {"num_frames": 2}, {"versions": {}, "device_target": "CPU", "mode": 1}, rank=0, world_size=1)
    assert (side["seed"], side["base_seed"], side["index_in_job"]) == (12, 10, 2)
    assert side["camera"] == {"elevations_deg": [5.0, 5.0]} and side["resolved"] == {"num_frames": 2}
    assert side["status"] == "writing" and side["source"] == "command line" and "--seed=12" in side["reproduce"]
    drawn = rec.new(entry, np.zeros((2, 64, 64, 3), np.uint8), {}, SimpleNamespace(seed=None), True, None, {},
                    rank=0, world_size=1)
    assert drawn["seed"] == 12  # a pipeline that reports no seed: the job's own
