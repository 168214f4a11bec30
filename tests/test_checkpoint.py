"""Loading upstream-layout checkpoints: explicit name map, every parameter filled, clear refusals."""
import os

import numpy as np
import pytest
from safetensors.numpy import save_file

from conftest import TINY_CONFIG, TINY_WEIGHTS
from svd_ms.checkpoint import build_engine, load_checkpoint_into, map_upstream_key
from svd_ms.errors import CheckpointError, CheckpointMismatchError


@pytest.fixture(scope="module")
def tiny_state():
    from safetensors import safe_open
    with safe_open(TINY_WEIGHTS, "np") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


def test_every_parameter_filled_and_text_tower_ignored(tiny_state):
    engine = build_engine(TINY_CONFIG)
    stats = load_checkpoint_into(engine, TINY_WEIGHTS)
    ignored = [k for k in tiny_state if map_upstream_key(k) is None]
    assert sorted(k.split("open_clip.model.")[1].split(".")[0] for k in ignored) == sorted(
        ["ln_final", "ln_final", "logit_scale", "positional_embedding", "text_projection", "token_embedding"])
    assert stats == {"loaded": len(tiny_state) - len(ignored), "ignored": len(ignored)}
    params = dict(engine.parameters_and_names())
    for key, value in tiny_state.items():
        if map_upstream_key(key) is not None:
            np.testing.assert_array_equal(params[key].asnumpy(), value.astype(np.float32))


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_other_dtypes_load(tiny_state, tmp_path, dtype):
    path = str(tmp_path / f"tiny_{dtype}.safetensors")
    if dtype == "float32":
        save_file({k: v.astype(np.float32) for k, v in tiny_state.items()}, path)
    else:
        _save_bf16(tiny_state, path)
    engine = build_engine(TINY_CONFIG)
    load_checkpoint_into(engine, path)
    key = "model.diffusion_model.out.2.weight"
    # Every reference value is exact in float16, and float16 values with <= 8 significant bits
    # survive bfloat16 only approximately: compare with bfloat16's resolution.
    tol = 0 if dtype == "float32" else 2 ** -7
    got = dict(engine.parameters_and_names())[key].asnumpy()
    np.testing.assert_allclose(got, tiny_state[key].astype(np.float32), rtol=tol, atol=0)


def _save_bf16(state, path):
    import json
    import struct
    header, blobs, offset = {}, [], 0
    for key, value in state.items():
        bits = (np.ascontiguousarray(value.astype(np.float32)).view(np.uint32) + 0x8000) >> 16
        raw = bits.astype("<u2").tobytes()
        header[key] = {"dtype": "BF16", "shape": list(value.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def _mutated(tiny_state, tmp_path, drop=(), add=None, reshape=None):
    state = {k: v for k, v in tiny_state.items() if k not in drop}
    if add:
        state.update(add)
    if reshape:
        state[reshape] = np.zeros((3, 3), np.float16)
    path = str(tmp_path / "mutated.safetensors")
    save_file(state, path)
    return path


def test_missing_unexpected_and_mismatched_names(tiny_state, tmp_path):
    engine = build_engine(TINY_CONFIG)
    missing = "model.diffusion_model.out.2.bias"
    with pytest.raises(CheckpointMismatchError, match=r"1 missing: model\.diffusion_model\.out\.2\.bias"):
        load_checkpoint_into(engine, _mutated(tiny_state, tmp_path, drop=[missing]))
    with pytest.raises(CheckpointMismatchError, match=r"1 unexpected: model\.extra\.weight"):
        load_checkpoint_into(engine, _mutated(tiny_state, tmp_path, add={"model.extra.weight": np.zeros(2, np.float16)}))
    with pytest.raises(CheckpointMismatchError, match=r"wrong shape.*out\.2\.bias \(3, 3\) vs \(4,\)"):
        load_checkpoint_into(engine, _mutated(tiny_state, tmp_path, reshape=missing))


def test_refusals_are_one_line(tmp_path):
    engine = build_engine(TINY_CONFIG)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(os.urandom(100))
    torch_file = tmp_path / "svd.pt"
    torch_file.write_bytes(b"PK\x03\x04rest")
    for path, pattern in [(str(tmp_path / "absent.ckpt"), "does not exist"),
                          (str(junk), "not a readable safetensors"),
                          (str(torch_file), "PyTorch checkpoint; convert it first: python -m svd_tools.convert")]:
        with pytest.raises(CheckpointError, match=pattern) as info:
            load_checkpoint_into(engine, path)
        assert "\n" not in str(info.value)


# ------------------------------------------------------------------------------------ formats


def test_checkpoint_format_by_content_then_extension(tmp_path, tiny_state):
    from svd_ms.checkpoint import checkpoint_format, engine_checkpoint_format

    st = tmp_path / "weights.bin"  # content wins over a misleading extension
    save_file({"a": np.zeros(3, np.float32)}, str(st))
    pickle = tmp_path / "legacy.ckpt"
    pickle.write_bytes(b"\x80\x02" + b"\0" * 30)
    (tmp_path / "folder" / "unet").mkdir(parents=True)
    assert checkpoint_format(st) == "safetensors"
    assert checkpoint_format(pickle) == "torch"
    assert checkpoint_format(tmp_path / "folder") == "diffusers-folder"
    assert engine_checkpoint_format(tmp_path / "folder") == "diffusers-folder"  # read directly (diffusers_folder.py)
    assert checkpoint_format(TINY_WEIGHTS) == "safetensors"
    fifo = tmp_path / "pipe.ckpt"
    os.mkfifo(fifo)  # must be refused without opening it (an open would block)
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    other = tmp_path / "notes.txt"
    other.write_text("hello")
    for path, words in [(fifo, "not a regular file"), (empty, "is empty"), (other, "is not a checkpoint"),
                        (tmp_path, "is a directory"), (pickle, "convert it first: python -m svd_tools.convert")]:
        with pytest.raises(CheckpointError, match=words) as info:
            engine_checkpoint_format(path)
        assert "\n" not in str(info.value) and repr(str(path)) in str(info.value)


# ------------------------------------------------------------------------------------ converted .ckpt


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """The tiny reference converted by svd_tools.convert (float16 kept, as upstream ships it)."""
    from svd_tools.convert import convert
    out = tmp_path_factory.mktemp("converted")
    convert(TINY_WEIGHTS, TINY_CONFIG, str(out), log=lambda *a: None)
    return str(out / "tiny_svd.ckpt")


def _records_equal_mindspore(path):
    import mindspore as ms
    from svd_ms.checkpoint import MindSporeCkptReader
    reader = MindSporeCkptReader(path)
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


def test_record_reader_equals_mindspore_load_checkpoint(converted, tmp_path, monkeypatch):
    n = _records_equal_mindspore(converted)
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


def test_converted_ckpt_loads_like_the_safetensors(converted, tiny_state):
    import mindspore as ms
    from_ckpt, from_st = build_engine(TINY_CONFIG), build_engine(TINY_CONFIG)
    stats = load_checkpoint_into(from_ckpt, converted)
    load_checkpoint_into(from_st, TINY_WEIGHTS)
    st = dict(from_st.parameters_and_names())
    for name, param in from_ckpt.parameters_and_names():
        assert param.dtype == ms.float32
        np.testing.assert_array_equal(param.asnumpy(), st[name].asnumpy())
    assert stats["loaded"] == len(st)


def test_dtype_loads_each_tensor_straight_to_float16(converted, tiny_state):
    import mindspore as ms
    engine = build_engine(TINY_CONFIG)
    unet = lambda name: ms.float16 if name.startswith("model.diffusion_model.") else None  # noqa: E731
    load_checkpoint_into(engine, converted, dtype=unet)
    params = dict(engine.parameters_and_names())
    key = "model.diffusion_model.out.2.weight"
    assert params[key].dtype == ms.float16
    np.testing.assert_array_equal(params[key].asnumpy(), tiny_state[key])
    assert params["first_stage_model.decoder.conv_out.weight"].dtype == ms.float32
    all16 = build_engine(TINY_CONFIG)
    load_checkpoint_into(all16, TINY_WEIGHTS, dtype=ms.float16)
    assert {p.dtype for p in all16.get_parameters()} == {ms.float16}


def test_truncated_or_corrupt_ckpt_is_one_line(converted, tmp_path):
    data = open(converted, "rb").read()
    engine = build_engine(TINY_CONFIG)
    cases = {"cut_end": data[:-1000], "cut_half": data[: len(data) // 2], "cut_head": data[:40]}
    flipped = bytearray(data)
    flipped[1] ^= 0x7F  # the first record's length
    cases["bad_length"] = bytes(flipped)
    cases["junk"] = np.random.default_rng(2).integers(0, 256, 5000, dtype=np.uint8).tobytes()
    for name, content in cases.items():
        path = tmp_path / f"{name}.ckpt"
        path.write_bytes(content)
        with pytest.raises(CheckpointError) as info:
            load_checkpoint_into(engine, str(path))
        msg = str(info.value)
        assert "\n" not in msg and repr(str(path)) in msg, msg
        print(f"{name}: {msg}")


def test_lack_of_memory_is_said_with_sizes(converted, monkeypatch):
    from svd_ms import checkpoint
    from svd_ms.errors import CheckpointMemoryError
    monkeypatch.setattr(checkpoint, "_available_memory", lambda: 10_000_000)
    with pytest.raises(CheckpointMemoryError) as info:
        load_checkpoint_into(build_engine(TINY_CONFIG), converted)
    msg = str(info.value)
    assert "not enough memory" in msg and "GB" in msg and "not a MindSpore" not in msg and "\n" not in msg
    print(f"\n{msg}")
