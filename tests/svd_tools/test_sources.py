"""svd_tools.sources: the converter's inputs, each behind the readers' keys/info/read interface:
safetensors (the engine's own reader, any file name), sharded safetensors and torch pickles
(weights only, bfloat16 kept as bits on request)."""
import json
import sys

import numpy as np
import pytest
from safetensors.numpy import save_file

from svd_ms.checkpoint import CheckpointWriter, SafetensorsReader
from svd_ms.errors import CheckpointError
from svd_tools.sources import ShardedSafetensorsSource, TorchSource, open_file_source


def test_safetensors_by_content_and_sharded_index(tmp_path):
    a, b = np.arange(4, dtype=np.float32), np.ones((2, 2), np.float16)
    save_file({"a": a}, str(tmp_path / "part1.bin"))  # a misleading name: the content decides
    save_file({"b": b}, str(tmp_path / "part2.safetensors"))
    assert isinstance(open_file_source(str(tmp_path / "part1.bin")), SafetensorsReader)
    index = tmp_path / "model.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": {"a": "part1.bin", "b": "part2.safetensors"}}))
    source = open_file_source(str(index))
    assert isinstance(source, ShardedSafetensorsSource) and source.keys() == ["a", "b"]
    assert source.info("b") == ((2, 2), "float16")
    assert np.array_equal(source.read("a"), a) and np.array_equal(source.read("b"), b)
    source.close()
    broken = tmp_path / "broken.safetensors.index.json"
    broken.write_text("{}")
    with pytest.raises(CheckpointError, match="is not a safetensors index"):
        open_file_source(str(broken))


def test_torch_pickle_read_with_weights_only(tmp_path):
    torch = pytest.importorskip("torch")
    values = torch.tensor([[1.0, -2.5], [3.140625, 0.0]])
    path = tmp_path / "svd.ckpt"
    torch.save({"state_dict": {"w": values.to(torch.bfloat16), "h": values.half()}}, path)
    source = open_file_source(str(path))
    assert isinstance(source, TorchSource) and sorted(source.keys()) == ["h", "w"]
    assert source.info("w") == ((2, 2), "bfloat16")
    assert np.array_equal(source.read("w"), values.numpy())
    bits = source.read("w", raw_bf16=True)
    assert bits.dtype == np.uint16 and np.array_equal((bits.astype(np.uint32) << 16).view(np.float32), values.numpy())
    assert source.read("h").dtype == np.float16
    source.close()
    torch.save({"w": values, "step": 3}, tmp_path / "mixed.pt")
    with pytest.raises(CheckpointError, match="not a state dict of tensors"):
        open_file_source(str(tmp_path / "mixed.pt"))


def test_pickle_without_torch_says_what_to_do(tmp_path, monkeypatch):
    path = tmp_path / "svd.ckpt"
    path.write_bytes(b"PK\x03\x04" + b"\0" * 100)
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch -> ImportError
    with pytest.raises(CheckpointError) as e:
        open_file_source(str(path))
    msg = str(e.value)
    assert "pip install torch" in msg and "safetensors" in msg and "\n" not in msg


def test_what_is_no_input_is_one_line(tmp_path):
    ms_ckpt = tmp_path / "converted.ckpt"
    with open(ms_ckpt, "wb") as f:
        CheckpointWriter(f).write("w", np.ones(2, np.float32))
    silent = tmp_path / "silent.ckpt"
    silent.write_bytes(b"\0" * 64)
    (tmp_path / "folder" / "unet").mkdir(parents=True)
    for path, words in [(ms_ckpt, "a MindSpore .ckpt already"), (silent, "not a torch checkpoint"),
                        (tmp_path / "folder", "a diffusers folder, not a file to convert")]:
        with pytest.raises(CheckpointError, match=words) as info:
            open_file_source(str(path))
        assert "\n" not in str(info.value)
