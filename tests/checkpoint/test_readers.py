"""svd_ms.checkpoint.readers: the engine opens a checkpoint with the reader its content calls for;
anything it cannot load directly is refused with the convert command; the reader table is the
one hook a new source plugs into."""
import numpy as np
import pytest
from safetensors.numpy import save_file

from svd_ms.checkpoint import readers
from svd_ms.checkpoint.ckpt import CheckpointWriter, MindSporeCkptReader
from svd_ms.checkpoint.safetensors import SafetensorsReader
from svd_ms.errors import CheckpointError


def test_reader_chosen_by_content(tmp_path):
    save_file({"a": np.arange(3, dtype=np.float32)}, str(tmp_path / "named_like_a.ckpt"))
    with open(tmp_path / "named_like_a.safetensors", "wb") as f:
        CheckpointWriter(f).write("a", np.arange(3, dtype=np.float32))
    for name, kind in (("named_like_a.ckpt", SafetensorsReader), ("named_like_a.safetensors", MindSporeCkptReader)):
        reader = readers.open_checkpoint(tmp_path / name)
        assert isinstance(reader, kind), name
        assert reader.keys() == ["a"] and np.array_equal(reader.read("a"), np.arange(3, dtype=np.float32))
        reader.close()


def test_other_formats_are_refused_with_the_convert_command(tmp_path):
    pickle = tmp_path / "legacy.ckpt"
    pickle.write_bytes(b"\x80\x02" + b"\0" * 30)
    torch_zip = tmp_path / "svd.pt"
    torch_zip.write_bytes(b"PK\x03\x04rest")
    (tmp_path / "folder" / "unet").mkdir(parents=True)
    index = tmp_path / "m.safetensors.index.json"
    index.write_text("{}")
    cases = [(pickle, "PyTorch checkpoint; convert it first: python -m svd_tools.convert"),
             (torch_zip, "--model_config CONFIG"), (index, "sharded safetensors index")]
    if "diffusers-folder" not in readers.ENGINE_READERS:  # until a folder reader is plugged in
        cases.append((tmp_path / "folder", "diffusers folder; convert it first"))
    for path, words in cases:
        with pytest.raises(CheckpointError, match=words) as info:
            readers.engine_checkpoint_format(path)
        assert "\n" not in str(info.value) and repr(str(path)) in str(info.value)


def test_a_new_source_plugs_in_through_the_reader_table(tmp_path, monkeypatch):
    """What a diffusers-folder reader does to become loadable: one entry in ENGINE_READERS."""
    class FolderReader:
        def __init__(self, path):
            self.path = path

    (tmp_path / "folder" / "unet").mkdir(parents=True)
    monkeypatch.setitem(readers.ENGINE_READERS, "diffusers-folder", FolderReader)
    assert readers.engine_checkpoint_format(tmp_path / "folder") == "diffusers-folder"
    opened = readers.open_checkpoint(tmp_path / "folder")
    assert isinstance(opened, FolderReader) and opened.path == str(tmp_path / "folder")
