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
    for path, words in cases:
        with pytest.raises(CheckpointError, match=words) as info:
            readers.engine_checkpoint_format(path)
        assert "\n" not in str(info.value) and repr(str(path)) in str(info.value)


def test_a_diffusers_folder_is_read_in_place(tmp_path):
    """A diffusers folder is one of the formats the engine loads directly (no conversion)."""
    from svd_ms.checkpoint.diffusers_folder import DiffusersFolderReader

    (tmp_path / "folder" / "unet").mkdir(parents=True)
    assert readers.engine_checkpoint_format(tmp_path / "folder") == "diffusers-folder"
    assert readers.ENGINE_READERS["diffusers-folder"] is DiffusersFolderReader
