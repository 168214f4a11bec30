"""svd_ms.checkpoint.formats: what a path is, by content first, extension second."""
import os

import numpy as np
import pytest
from safetensors.numpy import save_file

from conftest import TINY_WEIGHTS
from svd_ms.checkpoint.formats import checkpoint_format, is_safetensors, sniff_format
from svd_ms.errors import CheckpointError


def test_content_wins_over_the_extension(tmp_path):
    for name in ("weights.bin", "weights.ckpt", "weights.pt", "weights"):
        save_file({"a": np.zeros(3, np.float32)}, str(tmp_path / name))
        assert checkpoint_format(tmp_path / name) == "safetensors", name
        assert is_safetensors(tmp_path / name)
    pickle = tmp_path / "legacy.safetensors"
    pickle.write_bytes(b"\x80\x02" + b"\0" * 30)
    zipped = tmp_path / "new.ckpt"
    zipped.write_bytes(b"PK\x03\x04" + b"\0" * 30)
    assert checkpoint_format(pickle) == "torch" and not is_safetensors(pickle)
    assert checkpoint_format(zipped) == "torch"
    assert checkpoint_format(TINY_WEIGHTS) == "safetensors"


def test_mindspore_record_and_fallbacks(tmp_path):
    from svd_ms.checkpoint.ckpt import CheckpointWriter
    record = tmp_path / "x.weights"
    with open(record, "wb") as f:
        CheckpointWriter(f).write("w", np.ones(3, np.float32))
    assert sniff_format(record) == "mindspore" and checkpoint_format(record) == "mindspore"
    silent = tmp_path / "damaged.ckpt"  # first bytes say nothing: the extension decides
    silent.write_bytes(b"\0" * 64)
    assert sniff_format(silent) is None and checkpoint_format(silent) == "mindspore"
    index = tmp_path / "model.safetensors.index.json"
    index.write_text("{}")
    assert checkpoint_format(index) == "safetensors-index"
    (tmp_path / "folder" / "unet").mkdir(parents=True)
    assert checkpoint_format(tmp_path / "folder") == "diffusers-folder"
    (tmp_path / "pipe").mkdir()
    (tmp_path / "pipe" / "model_index.json").write_text("{}")
    assert checkpoint_format(tmp_path / "pipe") == "diffusers-folder"


def test_what_is_no_checkpoint_is_one_line(tmp_path):
    fifo = tmp_path / "pipe.ckpt"
    os.mkfifo(fifo)  # must be refused without opening it (an open would block)
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    other = tmp_path / "notes.txt"
    other.write_text("hello")
    (tmp_path / "plain").mkdir()
    for path, words in [(fifo, "not a regular file"), (empty, "is empty"), (other, "is not a checkpoint"),
                        (tmp_path / "plain", "is a directory"), (tmp_path / "absent.ckpt", "does not exist")]:
        with pytest.raises(CheckpointError, match=words) as info:
            checkpoint_format(path)
        assert "\n" not in str(info.value) and repr(str(path)) in str(info.value)
