"""svd_ms.sv3d: which configs are orbit models, and the sv3d_p camera path as upstream's sampling
script converts it."""
import json
import os

import numpy as np
import pytest

from conftest import REFERENCE, assert_close
from svd_ms import sv3d
from svd_ms.errors import InputError


def _case(name):
    settings = json.load(open(os.path.join(REFERENCE, f"{name}.json")))
    return settings, dict(np.load(os.path.join(REFERENCE, f"{name}.reference.npz")))


def test_camera_conversion_matches_upstream():
    settings, r = _case("tiny_sv3d_p")
    path = sv3d.camera_path(settings["T"], settings["elevations_deg"], settings["azimuths_deg"])
    assert_close("camera polars_rad", path["polars_rad"], r["polars_rad"], rel=1e-6)
    assert_close("camera azimuths_rad", path["azimuths_rad"], r["azimuths_rad"], rel=1e-6)
    default = sv3d.camera_path(settings["T"])  # 10 degrees, evenly spaced azimuths
    assert_close("camera default azimuths_rad", default["azimuths_rad"], r["azimuths_rad"], rel=1e-6)
    # Relative to the last azimuth, modulo 360, in the order given (upstream's sort is a no-op).
    custom = sv3d.camera_path(3, [0, -30, 45], [350, 10, 90])
    np.testing.assert_allclose(custom["polars_rad"], np.deg2rad([90, 120, 45]))
    np.testing.assert_allclose(custom["azimuths_rad"], np.deg2rad([260, 280, 0]))


@pytest.mark.parametrize("elevations, azimuths, culprit", [
    ([10, 20], None, "elevations_deg: give one number or 5"),
    (10, [0, 90, 180], "azimuths_deg: give 5 numbers"),
    (10, 90, "azimuths_deg: give 5 numbers"),
    ("high", None, "elevations_deg: 'high' is not a number"),
    (10, [0, 1, 2, "x", 4], "azimuths_deg: 'x' is not a number"),
    ([10, 10, float("nan"), 10, 10], None, "elevations_deg: nan is not a number"),
    (True, None, "elevations_deg: True is not a number"),
])
def test_bad_camera_is_one_line_error(elevations, azimuths, culprit):
    with pytest.raises(InputError) as info:
        sv3d.camera_path(5, elevations, azimuths)
    assert str(info.value).startswith(culprit) and "\n" not in str(info.value)


def test_orbit_models_are_told_by_their_conditioner():
    assert sv3d.is_orbit_model(["cond_frames", "cond_frames_without_noise", "cond_aug"])
    assert not sv3d.is_orbit_model(["cond_frames", "fps_id", "motion_bucket_id", "cond_aug"])
    assert sv3d.takes_camera(["cond_frames", "polars_rad", "azimuths_rad"])
    assert sv3d.resolve_camera(["cond_frames"], 5) is None
    with pytest.raises(InputError, match="^azimuths_deg: this model takes no camera path"):
        sv3d.resolve_camera(["cond_frames"], 5, azimuths_deg=[0, 1, 2, 3, 4])


