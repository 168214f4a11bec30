"""svd_ms.app.uploads: what a visitor uploads is checked (bytes, pixels before decoding, the CLI's
reader) and prepared exactly as the command line prepares its images."""
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from svd_ms import media, preparation
from svd_ms.app.uploads import UploadLimits, check_upload, prepare_upload
from svd_ms.errors import ImageError, ParamError


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


