"""svd_ms.checkpoint.ckpt: the one .ckpt codec. Its writer's records are byte for byte protobuf's,
load in mindspore.load_checkpoint, and its reader reads what mindspore.save_checkpoint writes."""
import numpy as np
import pytest

import convert_helpers as H
from svd_ms.checkpoint import ckpt
from svd_ms.errors import CheckpointError


def _pb2():
    from mindspore.train import checkpoint_pb2
    return checkpoint_pb2


def _write(path, tensors, types=None):
    with open(path, "wb") as f:
        writer = ckpt.CheckpointWriter(f)
        for name, value in tensors.items():
            writer.write(name, value, (types or {}).get(name))
    return str(path)


# ------------------------------------------------------------------------------------ the writer


def test_record_bytes_match_protobuf_serialisation():
    pb2 = _pb2()
    for name, arr in [("a.b", np.arange(6, dtype=np.float32).reshape(2, 3)), ("s", np.array(1.5, np.float16)),
                      ("e", np.zeros((0, 4), np.float32)), ("i", np.arange(3, dtype=np.int64)),
                      ("big", np.zeros((300, 2), np.uint8)), ("naïve/é", np.ones(1, np.bool_))]:
        msg = pb2.Checkpoint()
        v = msg.value.add()
        v.tag = name
        v.tensor.dims.extend(arr.shape)
        v.tensor.tensor_type = ckpt.ms_type_name(arr.dtype)
        v.tensor.tensor_content = arr.tobytes()
        ours = ckpt.record_prefix(name, arr.shape, ckpt.ms_type_name(arr.dtype), arr.nbytes) + arr.tobytes()
        assert ours == msg.SerializeToString(), name


def test_writer_output_loads_in_mindspore(tmp_path, monkeypatch):
    import mindspore as ms
    monkeypatch.setattr(ckpt, "SLICE_BYTES", 64)  # force multi-record tensors
    rng = np.random.default_rng(0)
    tensors = {"w": rng.standard_normal((7, 5)).astype(np.float32), "h": rng.standard_normal(40).astype(np.float16),
               "scalar": np.array(3.0, np.float32), "n": np.arange(33, dtype=np.int32)}
    got = ms.load_checkpoint(_write(tmp_path / "x.ckpt", tensors))
    assert list(got) == list(tensors)
    for k, v in tensors.items():
        a = got[k].asnumpy()
        assert a.dtype == v.dtype and a.shape == v.shape and np.array_equal(a, v), k


def test_bfloat16_round_trip_through_mindspore(tmp_path):
    """bfloat16 bits written as BFloat16 come back from mindspore.load_checkpoint as the same
    values, and from the record reader as the same bits (or widened)."""
    import mindspore as ms
    values = np.array([[1.0, -2.5, 3.140625], [0.0, 65280.0, -0.0078125]], np.float32)  # exact in bf16
    bits = (values.view(np.uint32) >> 16).astype(np.uint16)
    path = _write(tmp_path / "bf16.ckpt", {"b": bits}, {"b": "BFloat16"})
    theirs = ms.load_checkpoint(path)["b"]
    assert theirs.dtype == ms.bfloat16
    np.testing.assert_array_equal(theirs.astype(ms.float32).asnumpy(), values)
    reader = ckpt.MindSporeCkptReader(path)
    assert reader.info("b") == ((2, 3), "bfloat16")
    np.testing.assert_array_equal(reader.read("b", raw_bf16=True), bits)
    np.testing.assert_array_equal(reader.read("b"), values)


def test_unknown_dtype_is_refused():
    with pytest.raises(TypeError, match="complex64"):
        ckpt.ms_type_name(np.complex64)


# ------------------------------------------------------------------------------------ the reader


def _records_equal_mindspore(path):
    import mindspore as ms
    reader = ckpt.MindSporeCkptReader(path)
    theirs = ms.load_checkpoint(path)
    assert reader.keys() == list(theirs)
    for key in reader.keys():
        mine, ref = reader.read(key, raw_bf16=True), theirs[key]
        if ref.dtype == ms.bfloat16:
            ref_bits = ref.view(ms.uint16) if hasattr(ref, "view") else None
            assert ref_bits is None or np.array_equal(mine, ref_bits.asnumpy()), key
            continue
        ref = ref.asnumpy()
        assert mine.dtype == ref.dtype and mine.shape == ref.shape and np.array_equal(mine, ref), key
    return len(reader.keys())


def test_record_reader_equals_mindspore_load_checkpoint(tmp_path, monkeypatch):
    n = _records_equal_mindspore(H.converted_tiny(tmp_path / "converted"))
    # MindSpore's own writer: sliced records (small slices forced), a scalar, ints, the CRC trailer.
    import mindspore as ms
    import mindspore.train.serialization as ser
    monkeypatch.setattr(ser, "SLICE_SIZE", 1)  # KB: every tensor over 1 KB is cut into records
    rng = np.random.default_rng(0)
    own = [{"name": "w", "data": ms.Tensor(rng.standard_normal((64, 33)).astype(np.float32))},
           {"name": "h", "data": ms.Tensor(rng.standard_normal(700).astype(np.float16))},
           {"name": "step", "data": ms.Tensor(np.array(7, np.int32))},
           {"name": "s", "data": ms.Tensor(np.float32(2.5))}]
    path = str(tmp_path / "own.ckpt")
    ms.save_checkpoint(own, path, crc_check=True)
    assert open(path, "rb").read()[-17:-10] == b"crc_num"
    m = _records_equal_mindspore(path)
    print(f"\nrecord reader == mindspore.load_checkpoint: {n} tensors of the converted tiny ckpt, "
          f"{m} of a sliced CRC-trailed mindspore.save_checkpoint file")


def test_damaged_files_are_one_line(tmp_path):
    good = _write(tmp_path / "good.ckpt", {"w": np.arange(12, dtype=np.float32).reshape(3, 4)})
    data = open(good, "rb").read()
    flipped = bytearray(data)
    flipped[1] ^= 0x7F  # the record's length
    cases = {"cut": data[:-5], "bad_length": bytes(flipped), "no_tensors": b"", "junk": b"\x0a\x02\x0a\x00" + b"\xff" * 9}
    for name, content in cases.items():
        path = tmp_path / f"{name}.ckpt"
        path.write_bytes(content)
        with pytest.raises(CheckpointError) as info:
            ckpt.MindSporeCkptReader(path)
        assert "\n" not in str(info.value) and repr(str(path)) in str(info.value), name
