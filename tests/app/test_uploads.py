"""svd_ms.app.uploads: what a visitor uploads is checked (bytes, pixels before decoding, the CLI's
reader) and prepared exactly as the command line prepares its images; hostile uploads (a PNG that
inflates to gigabytes, a huge EXIF block, a text file posing as a video, a name with path
separators, an empty file) end in one line naming the file as the visitor called it."""
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from hostile_files import png_bomb
from svd_ms import media, preparation
from svd_ms.app.uploads import UploadLimits, check_upload, check_video_upload, prepare_upload, visitor_name
from svd_ms.errors import ImageError, ParamError, VideoError


def test_text_file_named_png_is_refused_by_its_own_name(tmp_path):
    up = tmp_path / "gradio-upload-dir" / "holiday.png"
    up.parent.mkdir()
    up.write_text("this is not an image\n")
    with pytest.raises(ImageError) as err:
        check_upload(str(up), UploadLimits())
    print(f"[web] text file named .png: {err.value}")
    assert "'holiday.png'" in str(err.value) and "not an image" in str(err.value)
    assert str(up.parent) not in str(err.value)  # no server path in what the visitor reads


def _png_header_only(width, height):
    """A PNG that claims width x height: what a decompression bomb shows before it unpacks."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + \
        chunk(b"IEND", b"")


def test_uploads_are_limited_in_pixels_and_bytes(tmp_path):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_header_only(5000, 5000))
    with pytest.raises(ImageError, match="'bomb.png': 5000x5000 has more than 16,777,216 pixels; refused before"):
        check_upload(str(bomb), UploadLimits())
    bomb.write_bytes(_png_header_only(30000, 30000))  # past Pillow's own limit: refused by Pillow first
    with pytest.raises(ImageError, match="'bomb.png': too large to open safely"):
        check_upload(str(bomb), UploadLimits())
    big = tmp_path / "big.png"
    Image.new("RGB", (256, 256)).save(big)
    with pytest.raises(ImageError, match="upload limit"):
        check_upload(str(big), UploadLimits(max_bytes=100))
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ImageError, match="empty"):
        check_upload(str(empty), UploadLimits())
    with pytest.raises(ParamError):
        UploadLimits(max_pixels=media.MAX_INPUT_PIXELS + 1)


def test_upload_is_prepared_exactly_as_the_cli_prepares_it(tmp_path):
    rgba = np.random.default_rng(0).integers(0, 256, (100, 150, 4), dtype=np.uint8)
    path = tmp_path / "alpha.png"
    Image.fromarray(rgba).save(path)
    img, info = check_upload(str(path), UploadLimits())
    ours, _, _ = prepare_upload(img, info, 64, 128, "alpha.png")
    cli, _, _ = preparation.load_image(str(path), 64, 128)
    assert ours.shape == (64, 128, 3) and np.array_equal(ours, cli)
    with pytest.raises(ParamError, match="multiple of 64") as err:
        prepare_upload(img, info, 100, None, "alpha.png")
    assert err.value.field == "height"




# ---- hostile uploads: one line each, nothing unpacked or read beyond the checks ----------------

def _one_line_refusal(call, error=ImageError):
    import time
    t0 = time.perf_counter()
    with pytest.raises(error) as err:
        call()
    took = time.perf_counter() - t0
    assert "\n" not in str(err.value) and took < 5, (str(err.value), took)
    return str(err.value), took


def test_a_png_that_inflates_to_gigabytes_is_refused_unread(tmp_path):
    bomb = tmp_path / "bomb.png"
    for (w, h), expected in (((40000, 33334), "too large to open safely"),   # 4.0 GB: past Pillow's own limit
                             ((9000, 9000), "more than 16,777,216 pixels; refused before decoding")):  # 243 MB
        bomb.write_bytes(png_bomb(w, h))
        message, took = _one_line_refusal(lambda: check_upload(str(bomb), UploadLimits()))
        print(f"[upload] {bomb.stat().st_size / 2**20:.1f} MB PNG of {w}x{h} ({w * h * 3 / 1e9:.2f} GB unpacked): "
              f"{message} ({took * 1e3:.0f} ms)")
        assert message.startswith("'bomb.png': ") and expected in message


def _exif(orientation, filler_bytes):
    """A big-endian TIFF block: Orientation, then a MakerNote of `filler_bytes` bytes."""
    entries = [struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0),
               struct.pack(">HHII", 0x927C, 7, filler_bytes, 8 + 2 + 2 * 12 + 4)]
    return b"MM\x00\x2a" + struct.pack(">I", 8) + struct.pack(">H", 2) + b"".join(entries) + b"\0" * 4 + \
        b"\xab" * filler_bytes


def test_an_image_with_a_huge_exif_block_opens_or_is_refused_in_one_line(tmp_path):
    import time
    picture = tmp_path / "tall_exif.png"
    Image.new("RGB", (96, 64), (200, 30, 30)).save(picture, exif=_exif(6, 12 * 2**20))  # 12 MB of EXIF
    t0 = time.perf_counter()
    img, info = check_upload(str(picture), UploadLimits())
    took = time.perf_counter() - t0
    print(f"[upload] {picture.stat().st_size / 2**20:.1f} MB PNG with a 12 MB EXIF block: opened upright "
          f"{img.size} in {took * 1e3:.0f} ms")
    assert img.size == (64, 96) and info["exif_orientation"] == 6 and took < 5  # rotated by its EXIF
    garbage = tmp_path / "garbage_exif.png"
    Image.new("RGB", (64, 64)).save(garbage, exif=b"MM\x00\x2a\x00\x00\x00\x08\xff\xff" + b"\xee" * 2**20)
    try:
        img, info = check_upload(str(garbage), UploadLimits())
        print(f"[upload] a 1 MB EXIF block of garbage: ignored, opened {img.size}")
    except ImageError as exc:
        print(f"[upload] a 1 MB EXIF block of garbage: {exc}")
        assert "\n" not in str(exc) and "'garbage_exif.png'" in str(exc)


def test_a_name_with_path_separators_is_shown_by_its_last_part(tmp_path):
    text = tmp_path / "upload.bin"
    text.write_text("not an image")
    for name in ("../../etc/passwd.png", "..\\..\\boot.ini.png", "/abs/olute.png", "line\nbreak.png"):
        message, _ = _one_line_refusal(lambda: check_upload(str(text), UploadLimits(), name=name))
        shown = message.split("'")[1]
        print(f"[upload] named {name!r}: {message}")
        assert "/" not in shown and "\\" not in shown and ".." != shown and shown.endswith(".png")
    assert visitor_name("..", "x") == "upload" and visitor_name(None, "/tmp/gradio/abc/photo.png") == "photo.png"
    good = tmp_path / "good.png"
    Image.new("RGB", (64, 64)).save(good)
    assert check_upload(str(good), UploadLimits(), name="../../secret/dir/cat.png")[1]["path"] == "cat.png"


def test_video_uploads_are_checked_before_decoding(tmp_path):
    clip = tmp_path / "clip.mp4"
    frames = np.random.default_rng(0).integers(0, 256, (5, 64, 128, 3), dtype=np.uint8)
    media.write_video(frames, clip, "mp4", 10)
    info = check_video_upload(str(clip), UploadLimits(), name="holiday.mp4")
    print(f"[upload] a 5-frame 128x64 clip at 10 fps: {info}")
    assert (info["path"], info["width"], info["height"], info["fps"], info["frames"]) == ("holiday.mp4", 128, 64,
                                                                                         10.0, 5)
    text = tmp_path / "text.mp4"
    text.write_text("this is a text file, not a video\n")
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    for path, limits, name, expected in (
            (text, UploadLimits(), "movie.mp4", "'movie.mp4': not a video this tool reads"),
            (empty, UploadLimits(), None, "'empty.mp4': the file is empty"),
            (clip, UploadLimits(max_bytes=100), None, "upload limit"),
            (clip, UploadLimits(max_pixels=64 * 64), "../x/big.mp4", "'big.mp4': 128x64 frames have more than "
                                                                     "4,096 pixels; refused before decoding")):
        message, _ = _one_line_refusal(lambda: check_video_upload(str(path), limits, name=name), VideoError)
        print(f"[upload] {expected.split(':')[0]}: {message}")
        assert expected in message and str(tmp_path) not in message
