"""svd_ms.media: image discovery and loading (EXIF, alpha, sizes), the one crop rule shared with
training, and checked, atomic video writing."""
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from svd_ms import media
from svd_ms.errors import ImageError


def test_exif_orientation_is_honoured(tmp_path):
    p = tmp_path / "rot.jpg"
    im = Image.new("RGB", (384, 256), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    im.save(p, exif=exif.tobytes(), quality=95)
    arr, info, _ = media.load_image(str(p))
    assert arr.shape == (384, 256, 3)
    assert info["exif_orientation"] == 6


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P", "L", "I;16", "CMYK"])
def test_modes_become_rgb(img, mode):
    suffix = ".jpg" if mode == "CMYK" else ".png"
    p = img(name=f"m{suffix}", mode=mode if mode != "I;16" else "L")
    if mode == "I;16":
        Image.fromarray((np.arange(256 * 384).reshape(256, 384) % 65535).astype(np.uint16)).save(p)
    arr, info, _ = media.load_image(str(p))
    assert arr.dtype == np.uint8 and arr.shape == (256, 384, 3)


def test_transparent_pixels_become_white(tmp_path):
    p = tmp_path / "t.png"
    Image.new("RGBA", (128, 64), (0, 0, 0, 0)).save(p)
    arr, info, _ = media.load_image(str(p))
    assert (arr == 255).all() and "white" in info["conversion"]


def _half_transparent_png(path: Path) -> Path:
    rgba = np.zeros((128, 192, 4), np.uint8)
    rgba[..., 0] = np.arange(192, dtype=np.uint8)[None, :]
    rgba[..., 1] = 90
    rgba[..., 3] = np.linspace(0, 255, 128).astype(np.uint8)[:, None]
    Image.fromarray(rgba).save(path)
    return path


def test_rgba_png_conditions_the_same_through_cli_and_api(tmp_path):
    """The CLI's loader and the Python API's image_to_array give bit-identical model input for a
    half-transparent PNG, given as a path or as a PIL image (one alpha rule)."""
    p = _half_transparent_png(tmp_path / "alpha.png")
    cli_uint8, _, _ = media.load_image(str(p))
    via_cli = media.image_to_array(cli_uint8)
    via_path = media.image_to_array(str(p))
    with Image.open(p) as im:
        via_pil = media.image_to_array(im.copy())
    assert np.array_equal(via_cli, via_path) and np.array_equal(via_cli, via_pil)
    assert not np.array_equal(via_path, media.image_to_array(np.asarray(Image.open(p).convert("RGB"))))


def test_training_and_inference_prepare_a_frame_identically(tmp_path):
    """The frame a model is fine-tuned on is the frame it is conditioned on at inference."""
    from svd_ms.training.data import VideoCSVDataset  # noqa: F401  (the dataset resizes with this function)
    import svd_ms.training.data as data

    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (300, 500, 3), dtype=np.uint8)
    path = tmp_path / "frame.png"
    Image.fromarray(frame).save(path)
    inference, _, _ = media.load_image(str(path), height=128, width=192)
    training = data.resize_cover_crop_frames(frame[None], 128, 192)[0]
    assert np.array_equal(inference, training)
    assert np.array_equal(media.image_to_array(inference),
                          training.astype(np.float32).transpose(2, 0, 1)[None] / 127.5 - 1.0)


def test_sides_brought_to_multiple_of_64_with_warning(img):
    arr, info, warnings = media.load_image(str(img(size=(500, 333))))
    assert arr.shape == (320, 448, 3)
    assert any("500x333" in w and "448x320" in w for w in warnings)


def test_height_width_resize_and_center_crop(img):
    arr, info, warnings = media.load_image(str(img(size=(800, 300))), height=576, width=1024)
    assert arr.shape == (576, 1024, 3)
    assert "center-cropped to 1024x576" in info["preprocessing"]
    assert not any("far from" in w for w in warnings)
    arr, _, _ = media.load_image(str(img(size=(400, 300))), height=128, width=None)
    assert arr.shape == (128, 192, 3)


def test_far_from_training_size_warns(img):
    _, _, warnings = media.load_image(str(img(size=(256, 256))))
    assert any("far from 1024x576" in w for w in warnings)


def test_image_specs_files_dirs_globs(tmp_path, img):
    a, b = img("a.png"), img("b.jpg")
    (tmp_path / "in" / "notes.txt").write_text("x")
    images, problems = media.resolve_images([str(tmp_path / "in"), str(a), str(tmp_path / "in" / "*.png"),
                                             str(tmp_path / "none" / "*.png")])
    assert images == sorted([os.path.normpath(str(a)), os.path.normpath(str(b))])
    assert len(problems) == 1 and "no image matches" in problems[0][1]


def test_existing_name_with_glob_characters_is_taken_literally(img):
    p = img("shot[1]*?.png")
    images, problems = media.resolve_images([str(p)])
    assert images == [os.path.normpath(str(p))] and problems == []
    arr, _, _ = media.load_image(str(p))
    assert arr.shape == (256, 384, 3)


def test_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    with pytest.raises(ImageError, match="not a regular file"):
        media.load_image(str(fifo))


def test_written_video_is_read_back_before_rename(tmp_path, monkeypatch):
    frames = np.random.default_rng(0).integers(0, 256, (5, 64, 96, 3), dtype=np.uint8)
    final = tmp_path / "v.mp4"
    media.write_video(frames, final, "mp4", fps=7)
    assert media.read_video_shape(final, "mp4") == (5, 64, 96)
    # An encoder that stops early (disk full, a file-size limit) leaves nothing under the final name.
    real = media._encode
    monkeypatch.setattr(media, "_encode", lambda f, path, fmt, fps: real(f[:2], path, fmt, fps))
    cut = tmp_path / "cut.mp4"
    with pytest.raises(ImageError, match="did not finish"):
        media.write_video(frames, cut, "mp4", fps=7)
    assert not cut.exists() and not [p for p in tmp_path.iterdir() if media.is_temporary(p)]


def test_existing_output_is_not_overwritten(tmp_path):
    frames = np.zeros((2, 64, 64, 3), np.uint8)
    final = tmp_path / "v.gif"
    final.write_bytes(b"mine")
    with pytest.raises(ImageError, match="not overwritten"):
        media.write_video(frames, final, "gif", fps=7)
    assert final.read_bytes() == b"mine"


def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    p = tmp_path / "bomb.png"
    Image.new("1", (9000, 8000)).save(p)  # 72 MP that compress to a few kB
    with pytest.raises(ImageError, match="refused before decoding"):
        media.load_image(str(p))


def test_large_image_without_size_is_scaled_down_with_a_warning(img):
    arr, info, warnings = media.load_image(str(img(size=(2000, 1500))))
    h, w = arr.shape[:2]
    assert h * w <= media.MAX_AUTO_PIXELS and h % 64 == 0 and w % 64 == 0
    assert (w, h) == (1152, 832) and any("2000x1500" in x and "1152x832" in x for x in warnings)
