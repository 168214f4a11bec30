"""svd_ms/sv4d2.py: the SV4D 2.0 script's framing of the input frames, its camera inputs and its
chunk schedule, against upstream's recorded run (tiny_sv4d2) and upstream's own schedule rules."""
import os

import numpy as np
import pytest
from PIL import Image

from conftest import REFERENCE
from svd_ms import sv4d2
from svd_ms.errors import InputError


@pytest.fixture(scope="module")
def ref():
    return dict(np.load(os.path.join(REFERENCE, "tiny_sv4d2.reference.npz")))


def test_input_strip_is_the_recorded_frames(ref):
    strip = np.array(Image.open(os.path.join(REFERENCE, "tiny_sv4d2.input.png")))
    frames = np.stack(np.split(strip, 8, axis=1))
    assert np.array_equal(frames, ref["input_frames"])


def test_framing_equals_upstream_preprocess_video(ref, tmp_path):
    for i, frame in enumerate(ref["input_frames"]):
        Image.fromarray(frame).save(tmp_path / f"f{i:03d}.png")
    (tmp_path / "notes.txt").write_text("not a frame")
    images = sv4d2.read_frames(str(tmp_path))
    processed = sv4d2.preprocess_frames(images, size=64, image_frame_ratio=0.9)
    assert processed.dtype == np.uint8 and np.array_equal(processed, ref["processed_frames"])
    assert np.array_equal(sv4d2.frames_to_model(processed), ref["images_v0"])
    assert len(sv4d2.read_frames(str(tmp_path), max_frames=3)) == 3


def test_cutout_frames_are_framed_by_alpha_and_keep_background_crops(ref):
    rgba = np.zeros((4, 80, 96, 4), np.uint8)
    rgba[:, 30:50, 40:60] = (200, 30, 30, 255)
    out = sv4d2.preprocess_frames(sv4d2.read_frames(rgba), size=64, image_frame_ratio=0.9)
    assert out.shape == (4, 64, 64, 3)
    assert (out[:, 0, 0] == 255).all() and (out[:, 32, 32, 0] > 150).all() and (out[:, 32, 32, 1] < 100).all()
    kept = sv4d2.preprocess_frames(sv4d2.read_frames(ref["input_frames"]), size=64, keep_background=True)
    assert kept.shape == (8, 64, 64, 3) and not np.array_equal(kept, ref["processed_frames"])


def test_camera_inputs_are_upstreams_float64(ref):
    angles = sv4d2.view_angles(4, sv4d2.script_entry(4))
    polar, azimuth = sv4d2.chunk_camera(angles, 5)
    assert polar.dtype == azimuth.dtype == np.float64
    assert np.array_equal(polar, ref["chunk0.polar_rad"]) and np.array_equal(azimuth, ref["chunk1.azimuth_rad"])
    eight = sv4d2.view_angles(8, sv4d2.script_entry(8), elevations_deg=[10] * 9)
    assert eight["azimuths_deg"].tolist() == [0, 30, 75, 120, 165, 210, 255, 300, 330]
    assert sv4d2.chunk_camera(eight, 5)[0].shape == (40,)


def upstream_starts(n, t, views):
    """simple_video_sample_4d2.py's loop, as written there (0ad7de9)."""
    t0_list = range(0, n, t) if views == 4 else range(0, n - t + 1, t - 1)
    return [min(t0, n - t) if t0 + t > n else t0 for t0 in t0_list]


@pytest.mark.parametrize("t", [5, 12])
def test_schedule_is_upstreams_where_upstream_works_and_complete_everywhere(t):
    for n in range(t, 4 * t):
        starts = sv4d2.chunk_starts(n, t)
        covered = set()
        for k, s in enumerate(starts):
            assert s == 0 or s in covered, "a later chunk starts on a frame an earlier one made"
            covered |= set(range(s, s + t))
        assert covered == set(range(n))
        if n < 2 * t:  # the 4-view script works
            assert starts == upstream_starts(n, t, 4)
        eight = upstream_starts(n, t, 8)
        if eight[-1] + t == n:  # the 8-view script reaches the last frame
            assert starts == eight
    with pytest.raises(ValueError):
        sv4d2.chunk_starts(3, 5)


def test_short_inputs_are_padded_forwards_then_backwards():
    frames = np.arange(3)[:, None]
    assert sv4d2.pad_to_chunk(frames, 5).ravel().tolist() == [0, 1, 2, 2, 1]
    assert sv4d2.pad_to_chunk(np.arange(1)[:, None], 3).ravel().tolist() == [0, 0, 0]


def test_video_bytes_are_truncated_as_upstream_writes_them():
    img = np.full((1, 3, 1, 1), 0.999, np.float32)  # (0.999 + 1) / 2 * 255 = 254.87
    assert sv4d2.to_video_uint8(img).ravel().tolist() == [254, 254, 254]


def test_bad_inputs_are_one_line_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        sv4d2.read_frames(str(tmp_path / "missing.mp4"))
    with pytest.raises(InputError, match="holds no .jpg"):
        sv4d2.read_frames(str(tmp_path))
    (tmp_path / "clip.mp4").write_bytes(b"not a video at all")
    with pytest.raises(InputError, match="not a video"):
        sv4d2.read_frames(str(tmp_path / "clip.mp4"))
    with pytest.raises(InputError, match="differ in size"):
        sv4d2.read_frames([np.zeros((8, 8, 3), np.uint8), np.zeros((8, 9, 3), np.uint8)])
    with pytest.raises(InputError, match="show no object"):
        sv4d2.preprocess_frames(sv4d2.read_frames(np.full((2, 8, 8, 3), 255, np.uint8)), size=64)
    with pytest.raises(InputError, match="multiple of 64"):
        sv4d2.preprocess_frames([], size=100)
    with pytest.raises(InputError, match="elevations_deg: give one number or 5 numbers"):
        sv4d2.view_angles(4, sv4d2.script_entry(4), elevations_deg=[0, 1])
    with pytest.raises(InputError, match="4 or 8 views"):
        sv4d2.script_entry(6)


def test_video_files_are_read_frame_by_frame(ref, tmp_path):
    from pathlib import Path

    from svd_ms import media
    path = Path(tmp_path / "object.mp4")
    media.write_video(np.repeat(np.repeat(ref["input_frames"], 2, axis=1), 2, axis=2), path, "mp4", 10)
    images = sv4d2.read_frames(str(path))
    assert len(images) == 8 and images[0].size == (160, 160)
    assert len(sv4d2.read_frames(str(path), max_frames=5)) == 5
