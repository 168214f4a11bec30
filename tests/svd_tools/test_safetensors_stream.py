"""svd_tools.safetensors_stream: a file written one tensor at a time is a valid safetensors file,
read back exactly by the safetensors library and by the project's reader (bfloat16 included)."""
import numpy as np
import pytest
from safetensors import safe_open

from svd_ms.checkpoint import SafetensorsReader
from svd_tools.safetensors_stream import write_safetensors


def test_stream_written_file_reads_back(tmp_path):
    rng = np.random.default_rng(0)
    tensors = {"f32": rng.standard_normal((3, 5)).astype(np.float32), "f16": np.arange(7, dtype=np.float16),
               "i64": np.arange(3, dtype=np.int64), "flag": np.array([True, False]), "empty": np.zeros((0, 2), np.float32),
               "big_endian": np.arange(4, dtype=">f4")}
    bf16 = np.array([0x3F80, 0xC020, 0x4049], np.uint16)  # 1.0, -2.5, 3.140625
    specs = [(name, np.dtype(v.dtype).newbyteorder("=").name, v.shape) for name, v in tensors.items()]
    specs.append(("bf16", "bfloat16", bf16.shape))
    produce = dict(tensors, bf16=bf16).__getitem__
    size = write_safetensors(str(tmp_path / "s.safetensors"), specs, produce, metadata={"format": "np", "n": 7})
    assert size == (tmp_path / "s.safetensors").stat().st_size
    with safe_open(str(tmp_path / "s.safetensors"), framework="np") as f:
        assert f.metadata() == {"format": "np", "n": "7"}
        for name, value in tensors.items():
            assert np.array_equal(f.get_tensor(name), value.astype(value.dtype.newbyteorder("="))), name
    with SafetensorsReader(tmp_path / "s.safetensors") as reader:
        assert reader.keys() == [name for name, _, _ in specs]
        np.testing.assert_array_equal(reader.read("bf16"), np.array([1.0, -2.5, 3.140625], np.float32))


def test_a_tensor_unlike_its_spec_is_refused(tmp_path):
    with pytest.raises(ValueError, match="declared float32"):
        write_safetensors(str(tmp_path / "x.safetensors"), [("a", "float32", (2,))],
                          lambda name: np.zeros(3, np.float32))
