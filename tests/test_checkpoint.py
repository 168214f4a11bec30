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
