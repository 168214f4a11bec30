"""svd_ms.app.tabs: the orbit's camera table (numbers named when wrong), its drawing, the cut-out
the SV3D model will see (the command line's preparation), the LoRA picker's rows and the presets."""
import numpy as np
import pytest
from PIL import Image

from conftest import REFERENCE
from svd_ms import sv3d
from svd_ms.app import tabs
from svd_ms.app.uploads import UploadLimits
from svd_ms.errors import ImageError, ParamError
from svd_ms.preparation import prepare_input

SV3D_IMAGE = f"{REFERENCE}/tiny_sv3d_p.input.png"


def test_camera_table_round_trip_and_errors():
    rows = tabs.default_camera(4)
    path = sv3d.camera_path(4)
    assert rows == [[float(e), float(a)] for e, a in zip(path["elevations_deg"], path["azimuths_deg"])]
    camera = tabs.camera_from_table(rows + [[None, None]])  # an empty row is ignored
    assert camera == {"elevations_deg": [10.0] * 4, "azimuths_deg": [90.0, 180.0, 270.0, 0.0]}
    with pytest.raises(ParamError, match="view 2: azimuth \\(deg\\) must be a number, got 'x'") as err:
        tabs.camera_from_table([[10, 0], [10, "x"]])
    assert err.value.field == "camera"
    with pytest.raises(ParamError, match="empty"):
        tabs.camera_from_table([])


def test_camera_plot_marks_each_view():
    img = tabs.draw_camera_path({"elevations_deg": [0.0, 45.0], "azimuths_deg": [0.0, 90.0]})
    px = np.asarray(img)
    assert img.size == (tabs.PLOT_SIDE, tabs.PLOT_SIDE)
    c, r = tabs.PLOT_SIDE / 2, tabs.PLOT_SIDE / 2 - 12
    assert tuple(px[int(c - r), int(c)]) == (40, 160, 60)  # the first view: azimuth 0 on the rim, green
    assert tuple(px[int(c), int(c + r / 2)]) == (60, 110, 200)  # elevation 45 halfway, azimuth 90 to the right


def test_the_cutout_is_the_command_lines(tmp_path):
    pixels, info, warnings = tabs.orbit_input(SV3D_IMAGE, UploadLimits(), keep_background=True, side=64)
    assert warnings and all(REFERENCE not in w for w in warnings), warnings  # the visitor's name, not the server's
    expected = prepare_input(SV3D_IMAGE, orbit=True, height=64, width=64, keep_background=True).pixels
    assert pixels.shape == (64, 64, 3) and np.array_equal(pixels, expected) and info["path"] == "tiny_sv3d_p.input.png"
    cutout = np.zeros((90, 120, 4), np.uint8)
    cutout[20:60, 30:100] = (200, 40, 40, 255)  # an opaque object off centre on a transparent ground
    Image.fromarray(cutout).save(tmp_path / "object.png")
    pixels, _, _ = tabs.orbit_input(str(tmp_path / "object.png"), UploadLimits(), keep_background=False, side=64)
    expected = prepare_input(str(tmp_path / "object.png"), orbit=True, height=64, width=64).pixels
    assert np.array_equal(pixels, expected) and tuple(pixels[32, 32]) == (200, 40, 40)  # recentred
    assert tuple(pixels[0, 0]) == (255, 255, 255)
    with pytest.raises(ImageError, match="'tiny_sv3d_p.input.png' has no alpha channel.*keep_background"):
        tabs.orbit_input(SV3D_IMAGE, UploadLimits(), keep_background=False, side=64)
    with pytest.raises(ParamError, match="view size=100 must be a multiple of 64"):
        tabs.orbit_input(SV3D_IMAGE, UploadLimits(), False, 100)
    text = tmp_path / "text.png"
    text.write_text("not a picture")
    with pytest.raises(ImageError, match="'text.png'"):
        tabs.orbit_input(str(text), UploadLimits(), False, None)


def test_lora_rows_and_picks():
    rows = tabs.lora_rows(["a.safetensors", "b.safetensors"])
    assert tabs.lora_picks(rows) == []
    assert tabs.lora_picks([["a.safetensors", 0.8], ["b.safetensors", 0], ["", 3]]) == [("a.safetensors", 0.8)]
    assert tabs.lora_table(["a.safetensors", "b.safetensors"], [("b.safetensors", -0.5)])[1] == ["b.safetensors", -0.5]
    with pytest.raises(ParamError, match="scale must be a number"):
        tabs.lora_picks([["a.safetensors", "lots"]])


def test_presets():
    assert tabs.preset_choices(False) == [("quality: 25 steps", "quality")]
    assert [v for _, v in tabs.preset_choices(True)] == ["quality", "fast"]
    assert tabs.PRESETS["fast"] == {"steps": 4, "sampler": "lcm"}

