"""svd_ms.preparation: the one path from what a user hands in to the conditioning image -- alpha,
sizes, SV3D cut-outs -- as upstream's sampling script prepares it, and the same for a path, a PIL
image and pixels."""
import os

import numpy as np
import pytest
from PIL import Image

from conftest import REFERENCE, assert_close
from svd_ms import preparation
from svd_ms.errors import ImageError, InputError
from svd_ms.preparation import PreparedImage, image_to_array, load_image, prepare_input


# ---- plain pictures (SVD) ------------------------------------------------------------------------

def test_exif_orientation_is_honoured(tmp_path):
    p = tmp_path / "rot.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    Image.new("RGB", (384, 256), (255, 0, 0)).save(p, exif=exif.tobytes(), quality=95)
    arr, info, _ = load_image(str(p))
    assert arr.shape == (384, 256, 3) and info["exif_orientation"] == 6


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P", "L", "I;16", "CMYK"])
def test_modes_become_rgb(img, mode):
    suffix = ".jpg" if mode == "CMYK" else ".png"
    p = img(name=f"m{suffix}", mode=mode if mode != "I;16" else "L")
    if mode == "I;16":
        Image.fromarray((np.arange(256 * 384).reshape(256, 384) % 65535).astype(np.uint16)).save(p)
    arr, info, _ = load_image(str(p))
    assert arr.dtype == np.uint8 and arr.shape == (256, 384, 3)


def test_transparent_pixels_become_white(tmp_path):
    p = tmp_path / "t.png"
    Image.new("RGBA", (128, 64), (0, 0, 0, 0)).save(p)
    arr, info, _ = load_image(str(p))
    assert (arr == 255).all() and "white" in info["conversion"]


def _half_transparent(path) -> np.ndarray:
    rgba = np.zeros((128, 192, 4), np.uint8)
    rgba[..., 0] = np.arange(192, dtype=np.uint8)[None, :]
    rgba[..., 1] = 90
    rgba[..., 3] = np.linspace(0, 255, 128).astype(np.uint8)[:, None]
    Image.fromarray(rgba).save(path)
    return rgba


def test_alpha_is_composited_by_upstreams_formula(tmp_path):
    """Upstream's SV3D branch: rgb * a + (1 - a) on white in float, * 255, truncated to uint8."""
    rgba = _half_transparent(tmp_path / "alpha.png")
    a = rgba[..., 3:] / 255.0
    upstream = ((rgba[..., :3] / 255.0 * a + (1 - a)) * 255).astype(np.uint8)
    arr, _, _ = load_image(str(tmp_path / "alpha.png"))
    assert np.array_equal(arr, upstream)


def test_a_path_a_pil_image_and_the_clis_pixels_condition_identically(tmp_path):
    """The CLI's loader, a path and a PIL image give bit-identical model input (one alpha rule)."""
    p = tmp_path / "alpha.png"
    _half_transparent(p)
    cli_uint8, _, _ = load_image(str(p))
    via_cli = prepare_input(cli_uint8).array
    via_path = prepare_input(str(p)).array
    with Image.open(p) as im:
        via_pil = prepare_input(im.copy()).array
    assert np.array_equal(via_cli, via_path) and np.array_equal(via_cli, via_pil)
    assert not np.array_equal(via_path, image_to_array(np.asarray(Image.open(p).convert("RGB"))))


def test_training_and_inference_prepare_a_frame_identically(tmp_path):
    """The frame a model is fine-tuned on is the frame it is conditioned on at inference."""
    import svd_ms.training.data as data

    frame = np.random.default_rng(0).integers(0, 256, (300, 500, 3), dtype=np.uint8)
    path = tmp_path / "frame.png"
    Image.fromarray(frame).save(path)
    inference, _, _ = load_image(str(path), height=128, width=192)
    training = data.resize_cover_crop_frames(frame[None], 128, 192)[0]
    assert np.array_equal(inference, training)
    assert np.array_equal(image_to_array(inference), training.astype(np.float32).transpose(2, 0, 1)[None] / 127.5 - 1)


def test_sides_brought_down_to_multiples_of_64_as_upstream_does(img):
    """Upstream's SVD branch: each side floored to a multiple of 64 by Pillow's default resize."""
    path = img(size=(500, 333))
    arr, info, warnings = load_image(str(path))
    with Image.open(path) as im:
        upstream = np.asarray(im.convert("RGB").resize((448, 320)))
    assert arr.shape == (320, 448, 3) and np.array_equal(arr, upstream)
    assert any("500x333" in w and "448x320" in w for w in warnings)


def test_height_width_resize_and_center_crop(img):
    arr, info, warnings = load_image(str(img(size=(800, 300))), height=576, width=1024)
    assert arr.shape == (576, 1024, 3)
    assert "center-cropped to 1024x576" in info["preprocessing"]
    assert not any("far from" in w for w in warnings)
    arr, _, _ = load_image(str(img(size=(400, 300))), height=128, width=None)
    assert arr.shape == (128, 192, 3)


def test_far_from_training_size_warns(img):
    _, _, warnings = load_image(str(img(size=(256, 256))))
    assert any("far from 1024x576" in w for w in warnings)


def test_large_image_without_size_is_scaled_down_with_a_warning(img):
    arr, info, warnings = load_image(str(img(size=(2000, 1500))))
    h, w = arr.shape[:2]
    assert h * w <= preparation.MAX_AUTO_PIXELS and h % 64 == 0 and w % 64 == 0
    assert (w, h) == (1152, 832) and any("2000x1500" in x and "1152x832" in x for x in warnings)


def test_what_prepare_input_takes_as_it_is():
    pixels = np.random.default_rng(1).integers(0, 256, (128, 192, 3), dtype=np.uint8)
    prepared = prepare_input(pixels)
    assert np.array_equal(prepared.pixels, pixels) and prepare_input(prepared) is prepared
    as_float = prepared.array
    assert np.array_equal(prepare_input(as_float).array, as_float) and prepare_input(as_float).pixels is None
    assert np.array_equal(as_float, pixels.astype(np.float32).transpose(2, 0, 1)[None] / 127.5 - 1)


def test_bad_inputs_are_one_line_errors(tmp_path):
    with pytest.raises(InputError, match="an image is required"):
        prepare_input(None)
    with pytest.raises(InputError, match="keep_background and image_frame_ratio prepare SV3D inputs"):
        prepare_input(np.zeros((64, 64, 3), np.uint8), keep_background=True)
    with pytest.raises(ImageError, match="'missing.png': no such file"):
        prepare_input("missing.png")
    with pytest.raises(InputError, match="must be a path, a PIL image or an array"):
        prepare_input(3)
    small = tmp_path / "small.png"
    Image.new("RGB", (32, 80)).save(small)
    with pytest.raises(ImageError, match="too small"):
        prepare_input(str(small))


# ---- SV3D: cut-outs recentred as upstream does ----------------------------------------------------

def _cutout(h=64, w=96, box=(10, 30, 50, 90), colour=(200, 30, 60)):
    """Transparent canvas with one opaque rectangle (rows box[0]:box[1], cols box[2]:box[3])."""
    arr = np.zeros((h, w, 4), np.uint8)
    arr[..., :3] = 17  # colour under the transparent pixels must not show
    arr[box[0]:box[1], box[2]:box[3]] = colour + (255,)
    return arr


def _orbit(image, size=64, **kwargs) -> PreparedImage:
    return prepare_input(image, orbit=True, height=size, **kwargs)


def test_rgba_cutout_is_recentred_on_white():
    # 20 x 40 object in a 64-tall image: pasted at the centre of a 64 x 64 canvas, no resize.
    out = _orbit(Image.fromarray(_cutout())).pixels
    expected = np.full((64, 64, 3), 255, np.uint8)
    expected[32 - 10:32 + 10, 32 - 20:32 + 20] = (200, 30, 60)
    assert out.shape == (64, 64, 3) and np.array_equal(out, expected)


def test_rgba_cutout_with_frame_ratio():
    # ratio 0.5: canvas side 40 / 0.5 = 80, resized to 64, so the object spans 32 x 16 pixels.
    out = _orbit(_cutout(), image_frame_ratio=0.5).pixels.astype(float)
    redness = np.clip((out[..., 0] - out[..., 1]) / (200 - 30), 0, 1)
    rows, cols = np.nonzero(redness > 0.5)
    assert (rows.min(), rows.max() + 1, cols.min(), cols.max() + 1) == (24, 40, 16, 48)
    assert np.all(out[:20] == 255) and np.all(out[44:] == 255)


def test_keep_background_centre_crops():
    arr = np.random.default_rng(0).integers(0, 256, (64, 96, 3), dtype=np.uint8)
    assert np.array_equal(_orbit(Image.fromarray(arr), keep_background=True).pixels, arr[:, 16:80])
    # The reference input (already prepared, square) passes through unchanged, as a file or pixels.
    r = np.load(os.path.join(REFERENCE, "tiny_sv3d_u.reference.npz"))
    png = os.path.join(REFERENCE, "tiny_sv3d_u.input.png")
    assert_close("prepared input", _orbit(png, size=192, keep_background=True).array, r["image"], max_abs=1e-6)
    with Image.open(png) as im:
        pixels = np.asarray(im.convert("RGB"))
    assert np.array_equal(prepare_input(pixels, orbit=True).pixels, pixels)


@pytest.mark.parametrize("kwargs, culprit", [
    (dict(height=100), "image size must be a positive multiple of 64"),
    (dict(height=128, width=64), "height=128 width=64: SV3D makes square views"),
    (dict(image_frame_ratio=1.5), "image_frame_ratio must be a number in (0, 1]"),
    (dict(image="missing.png"), "'missing.png': no such file"),
])
def test_bad_orbit_preparation(kwargs, culprit):
    kwargs = dict(dict(image=_cutout(), orbit=True), **kwargs)
    with pytest.raises(InputError) as info:
        prepare_input(**kwargs)
    assert str(info.value).startswith(culprit) and "\n" not in str(info.value)


def test_fully_transparent_cutout_is_refused(tmp_path):
    with pytest.raises(InputError, match="fully transparent"):
        _orbit(np.zeros((64, 64, 4), np.uint8))
    empty = tmp_path / "empty.png"
    Image.fromarray(np.zeros((64, 64, 4), np.uint8)).save(empty)
    with pytest.raises(ImageError, match="empty.png.*fully transparent"):  # a file: the job's other files run
        _orbit(str(empty))
