"""svd_ms.checkpoint.safetensors: THE safetensors reader. bfloat16 and the other dtypes read
exactly, whatever the file is named; damaged files are one-line errors."""
import json
import struct

import numpy as np
import pytest
from safetensors.numpy import save_file

import convert_helpers as H

from svd_ms.checkpoint.safetensors import SafetensorsReader, bf16_to_f32, itemsize, read_safetensors_header
from svd_ms.errors import CheckpointError

# Values exact in bfloat16 (8 significant bits), so the expected floats are known without our code.
BF16_VALUES = np.array([[1.0, -2.5, 3.140625], [0.0, 65280.0, -0.0078125]], np.float32)
BF16_BITS = np.array([[0x3F80, 0xC020, 0x4049], [0x0000, 0x477F, 0xBC00]], np.uint16)


def test_bfloat16_reads_as_float32_or_bits(tmp_path):
    path = H.write_bf16_safetensors(tmp_path / "w.safetensors", {"b": BF16_VALUES}, {"format": "pt"})
    with SafetensorsReader(path) as reader:
        assert reader.keys() == ["b"] and reader.info("b") == ((2, 3), "bfloat16")
        assert reader.metadata == {"format": "pt"}
        np.testing.assert_array_equal(reader.read("b"), BF16_VALUES)
        np.testing.assert_array_equal(reader.read("b", raw_bf16=True), BF16_BITS)
    np.testing.assert_array_equal(bf16_to_f32(BF16_BITS), BF16_VALUES)
    assert itemsize("bfloat16") == 2 and itemsize("float64") == 8


@pytest.mark.parametrize("name", ["weights.bin", "weights.ckpt", "weights"])
def test_any_file_name_is_read_by_content(tmp_path, name):
    tensors = {"f32": np.arange(6, dtype=np.float32).reshape(2, 3), "f16": np.array([0.5, -1.0], np.float16),
               "i64": np.arange(4, dtype=np.int64), "u8": np.arange(3, dtype=np.uint8)}
    save_file(tensors, str(tmp_path / name), metadata={"k": "v"})
    with SafetensorsReader(tmp_path / name) as reader:
        assert sorted(reader.keys()) == sorted(tensors)
        for key, value in tensors.items():
            got = reader.read(key)
            assert reader.info(key) == (value.shape, value.dtype.name)
            assert got.dtype == value.dtype and np.array_equal(got, value), key


def test_reopens_after_many_bytes(tmp_path, monkeypatch):
    from svd_ms.checkpoint import safetensors as st
    monkeypatch.setattr(st, "REOPEN_BYTES", 16)
    tensors = {f"t{i}": np.full(8, i, np.float32) for i in range(5)}
    save_file(tensors, str(tmp_path / "m.safetensors"))
    reader = SafetensorsReader(tmp_path / "m.safetensors")
    opened = []
    original = reader._open
    monkeypatch.setattr(reader, "_open", lambda: (opened.append(1), original())[1])
    for key, value in tensors.items():
        np.testing.assert_array_equal(reader.read(key), value)
    assert len(opened) == 4  # 32-byte tensors, a re-open before every read after the first
    reader.close()


def test_damaged_files_are_one_line(tmp_path):
    path = H.write_bf16_safetensors(tmp_path / "w.safetensors", {"b": BF16_VALUES})
    data = open(path, "rb").read()
    cases = {"short": data[:5], "cut": data[:-4], "not_json": struct.pack("<Q", 4) + b"abcd",
             "no_table": struct.pack("<Q", 2) + b"[]", "huge_header": struct.pack("<Q", 1 << 40) + b"{}",
             "bad_dtype": None}
    header = json.dumps({"x": {"dtype": "F8_E4M3", "shape": [1], "data_offsets": [0, 1]}}).encode()
    cases["bad_dtype"] = struct.pack("<Q", len(header)) + header + b"\0"
    for name, content in cases.items():
        bad = tmp_path / f"{name}.safetensors"
        bad.write_bytes(content)
        with pytest.raises(CheckpointError) as info:
            SafetensorsReader(bad, label="LoRA file")
        msg = str(info.value)
        assert "\n" not in msg and repr(str(bad)) in msg and msg.startswith("LoRA file"), (name, msg)
    entries, metadata, start = read_safetensors_header(path)
    assert entries == {"b": ((2, 3), "bfloat16", 0, 12)} and metadata == {} and start == len(data) - 12
