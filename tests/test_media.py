"""svd_ms.media: finding inputs, reading images and videos safely (regular files only, bombs
refused before decoding), and checked, atomic video writing. What a picture becomes as model
input is tests/test_preparation.py's."""
import os

import numpy as np
import pytest
from PIL import Image

from svd_ms import media
from svd_ms.errors import ImageError


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
    img, info = media.open_image_as_stored(str(p))
    assert img.size == (384, 256) and info["original_size"] == [384, 256]


def test_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    with pytest.raises(ImageError, match="not a regular file"):
        media.open_image_as_stored(str(fifo))


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
        media.open_image_as_stored(str(p))


def test_input_video_frames_are_evenly_spaced_first_and_last_kept(tmp_path):
    frames = np.zeros((7, 64, 64, 3), np.uint8)
    for i in range(7):
        frames[i] = 30 * i  # each frame its own grey level
    path = tmp_path / "clip.gif"
    media.write_video(frames, path, "gif", fps=7)
    picked, info = media.read_video_frames(str(path), 4)
    assert picked.shape == (4, 64, 64, 3) and info["frames_used"] == [0, 2, 4, 6]
    assert [int(f.mean()) for f in picked] == [0, 60, 120, 180] and info["resampled"] == "7 frames -> 4"
    with pytest.raises(ImageError, match="too short"):
        media.read_video_frames(str(path), 8)
