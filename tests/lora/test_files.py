"""svd_ms.lora.files: LoRA files (safetensors only) read into per-module adapters, and written in
the names diffusers saves and PEFT loads. The PEFT round trips are in tests/lora/test_merge.py."""
import json
import os

import numpy as np
import pytest
from conftest import TINY_CONFIG
from omegaconf import OmegaConf
from safetensors.numpy import save_file

from svd_ms.errors import LoRAError
from svd_ms.lora.files import FORMAT, read_lora, read_metadata, write_lora
from svd_ms.lora.names import UNetNames
from svd_ms.util import instantiate_from_config
import convert_helpers as H

Q = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
K = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_k"
OURS_Q = "input_blocks.1.1.transformer_blocks.0.attn1.to_q"


@pytest.fixture(scope="module")
def names():
    unet = instantiate_from_config(OmegaConf.load(TINY_CONFIG).model.params.network_config)
    return UNetNames(dict(unet.parameters_and_names()))


def pair(rank=2, fan_in=5, fan_out=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((rank, fan_in)).astype(np.float32), rng.standard_normal((fan_out, rank)).astype(np.float32)


def test_written_file_reads_back(names, tmp_path):
    path = str(tmp_path / "a.safetensors")
    down, up = pair()
    write_lora(path, {Q: (down, up), K: pair(seed=1)}, rank=2, alpha=8.0, extra={"targets": ["attn"], "base_model": "x"})
    assert os.listdir(tmp_path) == ["a.safetensors"]  # no temporary file left
    meta = read_metadata(path)
    assert (meta["format"], meta["rank"], float(meta["alpha"]), json.loads(meta["targets"]), meta["base_model"]) == (
        FORMAT, "2", 8.0, ["attn"], "x")
    assert json.loads(meta["lora_adapter_metadata"]) == {"unet.r": 2, "unet.lora_alpha": 8.0,
                                                         "unet.target_modules": [Q, K]}
    deltas = {d.module: d for d in read_lora(path, names)}
    q = deltas[OURS_Q]
    assert q.key == f"unet.{Q}.lora_A.weight" and (q.rank, q.alpha, q.scaling) == (2, 8.0, 4.0)
    assert np.array_equal(q.down, down) and np.array_equal(q.up, up)


def test_alpha_comes_from_the_tensor_then_the_file_then_the_rank(names, tmp_path):
    down, up = pair(rank=4)
    flat = "lora_unet_" + Q.replace(".", "_")
    cases = [({f"{flat}.lora_down.weight": down, f"{flat}.lora_up.weight": up, f"{flat}.alpha": np.array(2.0)},
              {"alpha": "16"}, 2.0),
             ({f"unet.{Q}.lora_A.weight": down, f"unet.{Q}.lora_B.weight": up},
              {"lora_adapter_metadata": json.dumps({"lora_alpha": 6})}, 6.0),
             ({f"unet.{Q}.lora.down.weight": down, f"unet.{Q}.lora.up.weight": up}, None, 4.0)]  # scaling 1
    for i, (tensors, metadata, alpha) in enumerate(cases):
        path = str(tmp_path / f"{i}.safetensors")
        save_file(tensors, path, metadata=metadata)
        (delta,) = read_lora(path, names)
        assert (delta.module, delta.alpha) == (OURS_Q, alpha)


def test_conv_shaped_up_tensors_are_flattened(names, tmp_path):
    down, up = pair()
    path = str(tmp_path / "conv.safetensors")
    save_file({f"unet.{Q}.lora_A.weight": down[:, :, None, None], f"unet.{Q}.lora_B.weight": up[:, :, None, None]},
              path)
    (delta,) = read_lora(path, names)
    assert delta.up.shape == (3, 2)


def _refused(path, names, *needles):
    with pytest.raises(LoRAError) as err:
        read_lora(path, names)
    message = str(err.value)
    assert "\n" not in message and path in message and all(n in message for n in needles), message


def test_unreadable_files_are_refused(names, tmp_path):
    _refused(str(tmp_path / "absent.safetensors"), names, "does not exist")
    pickle = tmp_path / "a.ckpt"
    pickle.write_bytes(b"\x80\x04")
    _refused(str(pickle), names, "not a .safetensors file")
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{nojson}")
    _refused(str(broken), names, "not a readable safetensors file")
    empty = str(tmp_path / "empty.safetensors")
    save_file({}, empty)
    _refused(empty, names, "holds no tensors")


@pytest.mark.parametrize("tensors, needles", [
    ({"unet.conv_in.weight": np.zeros((2, 2), np.float32)}, ("'unet.conv_in.weight' is not a LoRA tensor name",)),
    ({"unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_z.lora_A.weight": np.zeros((2, 2), np.float32)},
     ("names no layer",)),
    ({f"unet.{Q}.lora_A.weight": np.zeros((2, 5), np.float32), f"unet.{Q}.lora.down.weight": np.zeros((2, 5),
                                                                                                   np.float32)},
     ("are the same tensor",)),
    ({f"unet.{Q}.lora_A.weight": np.zeros((2, 5), np.float32)}, ("has no matching up (lora_B)",)),
    ({f"unet.{Q}.lora_A.weight": np.zeros((2, 5), np.int32), f"unet.{Q}.lora_B.weight": np.zeros((3, 2), np.int32)},
     ("not a float tensor",)),
    ({f"unet.{Q}.lora_A.weight": np.zeros((2, 5), np.float32), f"unet.{Q}.lora_B.weight": np.zeros((3, 4),
                                                                                                 np.float32)},
     ("are not a rank-r pair",)),
])
def test_files_that_do_not_fit_are_refused_naming_the_tensor(names, tmp_path, tensors, needles):
    path = str(tmp_path / "bad.safetensors")
    save_file(tensors, path)
    _refused(path, names, *needles)


# ---- read by content, any dtype (the one safetensors reader)

def test_written_file_reads_back_with_its_metadata(tmp_path):
    rng = np.random.default_rng(0)
    down, up = rng.standard_normal((2, 8)).astype(np.float32), rng.standard_normal((8, 2)).astype(np.float32)
    path = str(tmp_path / "adapter.safetensors")
    write_lora(path, {MODULE: (down, up)}, rank=2, alpha=4.0, extra={"base_model": "svd_xt"})
    (delta,) = read_lora(path, NAMES)
    assert delta.module == MODULE and delta.rank == 2 and delta.alpha == 4.0 and delta.scaling == 2.0
    assert np.array_equal(delta.down, down) and np.array_equal(delta.up, up)
    meta = read_metadata(path)
    assert meta["format"] == FORMAT and meta["rank"] == "2" and meta["base_model"] == "svd_xt"
    assert [p.name for p in tmp_path.iterdir()] == ["adapter.safetensors"]  # no temporary file left


def test_bfloat16_file_with_any_name_is_read(tmp_path):
    down = np.array([[1.0, -2.5, 0.5], [0.25, 3.0, -1.0]], np.float32)  # exact in bfloat16
    up = np.array([[0.5, 1.5], [-0.75, 2.0], [1.0, 0.0]], np.float32)
    path = H.write_bf16_safetensors(tmp_path / "adapter.bin", {f"unet.{MODULE}.lora_A.weight": down,
                                                               f"unet.{MODULE}.lora_B.weight": up},
                                    metadata={"alpha": "1.0"})
    (delta,) = read_lora(path, NAMES)
    assert delta.down.dtype == np.float32 and np.array_equal(delta.down, down) and np.array_equal(delta.up, up)
    assert delta.alpha == 1.0 and delta.scaling == 0.5


def test_what_is_not_safetensors_is_refused_unread(tmp_path):
    pickle = tmp_path / "adapter.safetensors"
    pickle.write_bytes(b"\x80\x04not read")
    good = str(tmp_path / "good.safetensors")
    write_lora(good, {MODULE: (np.ones((1, 8), np.float32), np.ones((8, 1), np.float32))}, rank=1, alpha=1.0)
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(open(good, "rb").read()[:-8])
    for path, words in [(pickle, "is not a safetensors file"), (tmp_path / "absent.safetensors", "does not exist"),
                        (truncated, "LoRA file .* is truncated")]:
        with pytest.raises(LoRAError, match=words) as info:
            read_lora(str(path), NAMES)
        assert "\n" not in str(info.value) and repr(str(path)) in str(info.value)
