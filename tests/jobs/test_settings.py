"""svd_ms.jobs.settings: JobSettings and its checks (the one seed rule included), the flags only
some models take, the camera against the pipeline's frame count, output names and folder, inputs."""
import os

import pytest

from conftest import REFERENCE, TINY_CONFIG
from svd_ms import sv3d
from svd_ms.errors import UsageError
from svd_ms.jobs.settings import (JobSettings, check_camera, check_model_flags, check_output_dir, output_paths,
                                  resolve_inputs)
from svd_ms.params import SVDParams
from svd_ms.util import load_config


@pytest.mark.parametrize("changes,culprit", [
    (dict(images=[]), "nothing to do"),
    (dict(seed=2**32), "--seed=4294967296 must be an integer between 0 and 4294967295"),
    (dict(seed=-1), "--seed=-1 must be an integer between 0 and 4294967295"),
    (dict(output_format="avi"), "--output_format=avi"),
    (dict(dist_timeout=0), "--dist_timeout=0"),
    (dict(height=100), "--height=100 must be a positive multiple of 64"),
    (dict(width=0), "--width=0"),
    (dict(videos=["v.mp4"], images=["a.png", "b.png"]), "--image with --video"),
])
def test_validate_names_the_flag(changes, culprit):
    settings = JobSettings(**dict(dict(images=["a.png"]), **changes))
    with pytest.raises(UsageError) as err:
        settings.validate()
    assert str(err.value).startswith(culprit)


def test_valid_settings_and_kind():
    JobSettings(images=["a.png"], seed=0).validate()
    JobSettings(images=["a.png"], seed=2**32 - 1, height=64, width=128).validate()
    assert JobSettings(images=["a.png"]).kind == "image"
    assert JobSettings(images=[], videos=["v.mp4"]).kind == "video"


def _keys(config):
    return sv3d.conditioner_input_keys(load_config(config, require_model=True).model)


SV3D_P = os.path.join(REFERENCE, "tiny_sv3d_p.sgm.yaml")


def test_model_flags(capsys):
    plain = SVDParams(config=TINY_CONFIG)
    check_model_flags(JobSettings(images=["a"]), plain, orbit=False)
    with pytest.raises(UsageError, match="--keep_background and --image_frame_ratio prepare SV3D inputs"):
        check_model_flags(JobSettings(images=["a"], keep_background=True), plain, orbit=False)
    with pytest.raises(UsageError, match="SV3D makes square views"):
        check_model_flags(JobSettings(images=["a"], height=64, width=128), plain, orbit=True)
    check_model_flags(JobSettings(images=["a"]), SVDParams(config=TINY_CONFIG, fps=9), orbit=True)
    assert "--SVD.fps not used" in capsys.readouterr().err


def test_camera_is_checked_against_the_resolved_frame_count():
    keys = _keys(SV3D_P)
    check_camera(keys, 3, JobSettings(images=["a"], azimuths_deg=[0, 120, 240]))
    with pytest.raises(UsageError) as err:
        check_camera(keys, 5, JobSettings(images=["a"], azimuths_deg=[0, 120, 240]))
    assert str(err.value).startswith("--azimuths_deg")
    with pytest.raises(UsageError, match="takes no camera path"):
        check_camera(_keys(TINY_CONFIG), 3, JobSettings(images=["a"], elevations_deg=10.0))


def test_output_paths(tmp_path):
    assert output_paths(tmp_path, "/in/cat.jpg", 7, "mp4") == (tmp_path / "cat_seed7.mp4", tmp_path / "cat_seed7.json")
    assert output_paths(tmp_path, "cat.png", 0, "png") == (tmp_path / "cat_seed0", tmp_path / "cat_seed0.json")


def test_output_dir(tmp_path):
    assert check_output_dir(str(tmp_path / "a" / "b")).is_dir()
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError, match="--output_dir"):
        check_output_dir(str(tmp_path / "file"))
    assert list((tmp_path / "a" / "b").iterdir()) == []  # the write probe is gone


def test_resolve_inputs(img):
    a, b = img("a.png"), img("b.png")
    params = SVDParams(config=TINY_CONFIG)
    inputs, problems, condition = resolve_inputs(JobSettings(images=[str(b), str(a)]), params)
    assert inputs == [str(a), str(b)] and problems == [] and condition is None
    with pytest.raises(UsageError, match="--SVD.strength applies to --video inputs only"):
        resolve_inputs(JobSettings(images=[str(a)]), SVDParams(config=TINY_CONFIG, strength=0.5))
    with pytest.raises(UsageError, match="num_clips"):
        resolve_inputs(JobSettings(images=[], videos=["v.mp4"]), SVDParams(config=TINY_CONFIG, num_clips=2))
    with pytest.raises(UsageError, match="one conditioning image"):
        resolve_inputs(JobSettings(images=[str(a.parent)], videos=["v.mp4"]), params)  # a folder of two
