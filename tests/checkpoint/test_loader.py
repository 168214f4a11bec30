"""svd_ms.checkpoint.loader: upstream-layout checkpoints fill every engine parameter through an\nexplicit name map; names, shapes and memory are checked first; refusals are one line."""
import json
import os

import numpy as np
import pytest
from safetensors.numpy import save_file

import convert_helpers as H
from conftest import TINY_CONFIG, TINY_WEIGHTS
from svd_ms.checkpoint.loader import build_engine, check_names, ignored_reason, load_checkpoint_into, map_upstream_key
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
        H.write_bf16_safetensors(path, tiny_state)
    engine = build_engine(TINY_CONFIG)
    load_checkpoint_into(engine, path)
    key = "model.diffusion_model.out.2.weight"
    # Every reference value is exact in float16, and float16 values with <= 8 significant bits
    # survive bfloat16 only approximately: compare with bfloat16's resolution.
    tol = 0 if dtype == "float32" else 2 ** -7
    got = dict(engine.parameters_and_names())[key].asnumpy()
    np.testing.assert_allclose(got, tiny_state[key].astype(np.float32), rtol=tol, atol=0)


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


# ------------------------------------------------------------------------------------ converted .ckpt


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """The tiny reference converted by svd_tools.convert (float16 kept, as upstream ships it)."""
    return H.converted_tiny(tmp_path_factory.mktemp("converted"))


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
    from svd_ms.errors import CheckpointMemoryError
    from svd_ms.runtime import memory
    monkeypatch.setattr(memory, "available_host_bytes", lambda: 10_000_000)  # the one free-memory rule
    with pytest.raises(CheckpointMemoryError) as info:
        load_checkpoint_into(build_engine(TINY_CONFIG), converted)
    msg = str(info.value)
    assert "not enough memory" in msg and "GiB" in msg and "not a MindSpore" not in msg and "\n" not in msg
    print(f"\n{msg}")


# ------------------------------------------------------------------------------------ full size (names only): the name map


@pytest.mark.parametrize("config,manifest", [
    ("svd.yaml", "svd.keys.json"), ("svd_xt.yaml", "svd.keys.json"), ("svd_xt_1_1.yaml", "svd.keys.json"),
    ("svd_image_decoder.yaml", "svd_image_decoder.keys.json"),
    ("svd_xt_image_decoder.yaml", "svd_image_decoder.keys.json"),
])
def test_full_size_manifest_maps_completely(config, manifest):
    """Every tensor of the real checkpoints is either an engine parameter of the right shape
    or on the named ignore list; no engine parameter is left without a tensor."""
    shapes = {k: tuple(v) for k, v in json.load(open(os.path.join(H.MANIFEST, manifest))).items()}
    expected = H.expected_shapes(os.path.join(H.REPO, "configs", config))
    found, ignored = {}, {}
    for key, shape in shapes.items():
        name = map_upstream_key(key)
        if name is None:
            ignored[key] = ignored_reason(key)
            assert ignored[key], key
        else:
            found[name] = shape
    check_names({k: tuple(v) for k, v in expected.items()}, found)
    assert len(found) == len(expected)
    print(f"\n{config}: {len(found)} tensors map, {len(ignored)} ignored ({sorted(set(ignored.values()))})")
