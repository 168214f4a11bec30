"""svd_ms.training.data: what a training CSV may point at and hold."""
import numpy as np
import pytest

from svd_ms.errors import DataError
from svd_ms.training.data import BadVideo, VideoCSVDataset


def _dataset(tmp_path, rows, root="data", **kwargs):
    (tmp_path / root).mkdir(exist_ok=True)
    csv = tmp_path / "list.csv"
    csv.write_text("path,fps,motion_bucket_id\n" + "".join(r + "\n" for r in rows))
    return VideoCSVDataset(str(csv), root=str(tmp_path / root), num_frames=2, height=64, width=64, **kwargs)


@pytest.mark.parametrize("path", ["../secret.mp4", "../../etc/passwd", "/etc/passwd"])
def test_paths_outside_the_root_are_refused(tmp_path, path):
    (tmp_path / "secret.mp4").write_bytes(b"x")
    ds = _dataset(tmp_path, [f"{path},8,127"])
    with pytest.raises(BadVideo, match="outside data.root"):
        ds.path(0)


def test_root_slash_allows_absolute_paths(tmp_path):
    csv = tmp_path / "list.csv"
    csv.write_text(f"path\n{tmp_path / 'clip.mp4'}\n")
    ds = VideoCSVDataset(str(csv), root="/", num_frames=2, height=64, width=64)
    assert ds.path(0) == str(tmp_path / "clip.mp4")


def test_binary_csv_is_named(tmp_path):
    csv = tmp_path / "list.csv"
    csv.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(DataError, match="list.csv"):
        VideoCSVDataset(str(csv), num_frames=2, height=64, width=64)


@pytest.mark.parametrize("row,needle", [("a.mp4,8,300", "out of range"), ("a.mp4,0.5,127", "frame rate"),
                                        ("a.mp4,8,lots", "not a number")])
def test_csv_values_are_checked_like_the_cli(tmp_path, monkeypatch, row, needle):
    ds = _dataset(tmp_path, [row])
    monkeypatch.setattr(ds, "read_clip", lambda index, rng: (np.zeros((2, 64, 64, 3), np.uint8), 8.0))
    with pytest.raises(BadVideo, match=needle):
        ds[0]
