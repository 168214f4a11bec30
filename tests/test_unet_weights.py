"""svd_ms.unet_weights: a UNet-only file in diffusers' layout (AnimateLCM-SVD-xt's kind) placed over
an engine. The file here is the state dict of a UNet diffusers itself builds in the tiny structure;
the end-to-end AnimateLCM run is tested in tests/test_animatelcm.py."""
import numpy as np
import pytest
from conftest import TINY_CONFIG
from lora_reference import diffusers_unet
from mindspore import nn
from omegaconf import OmegaConf
from safetensors.numpy import save_file

from svd_ms.errors import CheckpointError, CheckpointMismatchError
from svd_ms.unet_weights import (
    UNET_PREFIX,
    load_unet_weights,
    plan_unet_weights,
    resolve_unet_file,
)
from svd_ms.util import instantiate_from_config
import os
from safetensors.numpy import load_file
import convert_helpers as H
from svd_ms.errors import CheckpointError
from svd_ms.unet_weights import UNET_PREFIX, load_unet_weights, resolve_unet_file
from test_animatelcm import FOLDER, sgm_config


class Engine(nn.Cell):
    """What load_unet_weights needs of a DiffusionEngine: the UNet under model.diffusion_model."""

    def __init__(self, unet):
        super().__init__()
        self.model = nn.CellDict({"diffusion_model": unet})

    def construct(self, x):
        return x


def tiny_unet():
    """This project's UNet of the tiny reference config (random until loaded)."""
    return instantiate_from_config(OmegaConf.load(TINY_CONFIG).model.params.network_config)


@pytest.fixture(scope="module")
def diffusers_state():
    return {k: v.detach().numpy().copy() for k, v in diffusers_unet().state_dict().items()}


def test_file_folder_and_pipeline_folder_resolve(tmp_path):
    unet = tmp_path / "pipe" / "unet"
    unet.mkdir(parents=True)
    weights = unet / "diffusion_pytorch_model.fp16.safetensors"
    weights.write_bytes(b"x")
    assert resolve_unet_file(str(tmp_path / "pipe")) == str(weights)
    assert resolve_unet_file(str(unet)) == str(weights)
    assert resolve_unet_file(str(weights)) == str(weights)


@pytest.mark.parametrize("name, needle", [("absent.safetensors", "do not exist"), ("unet.bin", "must be a .safetensors"),
                                          ("empty_dir", "holds no diffusion_pytorch_model.safetensors")])
def test_unusable_paths_are_refused_before_reading(tmp_path, name, needle):
    path = tmp_path / name
    if name == "unet.bin":
        path.write_bytes(b"\x80\x04pickle")  # a pickle could run code: never read
    elif name == "empty_dir":
        path.mkdir()
    with pytest.raises(CheckpointError, match=needle):
        resolve_unet_file(str(path))


def test_plan_names_the_first_misfit(diffusers_state):
    shapes = {k: v.shape for k, v in diffusers_state.items()}
    engine = {f"{UNET_PREFIX}{n}": p.shape for n, p in tiny_unet().parameters_and_names()}
    places = plan_unet_weights(shapes, engine, "f")
    assert sorted(places.values()) == sorted(engine)  # every UNet parameter, each once
    extra = dict(shapes, **{"down_blocks.0.resnets.0.spatial_res_block.bogus.weight": (3,)})
    with pytest.raises(CheckpointMismatchError, match="'down_blocks.0.resnets.0.spatial_res_block.bogus.weight' "
                                                      "has no place"):
        plan_unet_weights(extra, engine, "f")
    wrong = dict(shapes, **{"conv_in.weight": (1, 2, 3, 3)})
    with pytest.raises(CheckpointMismatchError, match=r"'conv_in.weight' has shape \(1, 2, 3, 3\)"):
        plan_unet_weights(wrong, engine, "f")
    short = {k: v for k, v in shapes.items() if k != "conv_out.bias"}
    with pytest.raises(CheckpointMismatchError, match=r"no tensor for the UNet's 'model.diffusion_model.out.2.bias' "
                                                      r"\(1 UNet parameters missing\)"):
        plan_unet_weights(short, engine, "f")


def test_load_places_every_tensor_and_refusals_change_nothing(diffusers_state, tmp_path):
    path = str(tmp_path / "unet.safetensors")
    save_file(diffusers_state, path)
    engine = Engine(tiny_unet())
    assert load_unet_weights(engine, path) == {"loaded": len(diffusers_state)}
    params = dict(engine.parameters_and_names())
    # names from upstream's layout (see tests/test_diffusers_map.py), values from diffusers' tensors
    for diffusers, ours in (("conv_in.weight", "input_blocks.0.0.weight"),
                            ("down_blocks.0.attentions.0.temporal_transformer_blocks.0.attn1.to_q.weight",
                             "input_blocks.1.1.time_stack.0.attn1.to_q.weight"),
                            ("mid_block.resnets.0.spatial_res_block.conv1.bias", "middle_block.0.in_layers.2.bias")):
        assert np.array_equal(params[UNET_PREFIX + ours].asnumpy(), diffusers_state[diffusers]), ours
    before = {n: p.asnumpy().copy() for n, p in params.items()}
    bad = dict(diffusers_state)
    bad["conv_out.bias"] = np.zeros(7, np.float32)
    save_file(bad, str(tmp_path / "bad.safetensors"))
    with pytest.raises(CheckpointMismatchError, match="conv_out.bias"):
        load_unet_weights(engine, str(tmp_path / "bad.safetensors"))
    assert all(np.array_equal(before[n], p.asnumpy()) for n, p in engine.parameters_and_names())
    (tmp_path / "broken.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_unet_weights(engine, str(tmp_path / "broken.safetensors"))


# ---- read by content, any dtype (the one safetensors reader)

def test_file_found_in_folders_and_accepted_by_content(tmp_path):
    assert resolve_unet_file(FOLDER) == UNET_FILE
    assert resolve_unet_file(os.path.join(FOLDER, "unet")) == UNET_FILE
    renamed = tmp_path / "unet.bin"
    renamed.write_bytes(open(UNET_FILE, "rb").read())
    assert resolve_unet_file(str(renamed)) == str(renamed)
    pickle = tmp_path / "unet.safetensors"
    pickle.write_bytes(b"\x80\x04not read")
    (tmp_path / "empty_folder").mkdir()
    for path, words in [(pickle, "must be a safetensors file"), (tmp_path / "absent.safetensors", "do not exist"),
                        (tmp_path / "empty_folder", "holds no diffusion_pytorch_model.safetensors")]:
        with pytest.raises(CheckpointError, match=words) as info:
            resolve_unet_file(str(path))
        assert "\n" not in str(info.value) and repr(str(path)) in str(info.value)


def test_bfloat16_file_named_bin_replaces_every_unet_parameter(tmp_path):
    from svd_ms.checkpoint import build_engine

    engine = build_engine(sgm_config(str(tmp_path / "tiny_animatelcm.yaml")))
    tensors = load_file(UNET_FILE)
    path = H.write_bf16_safetensors(tmp_path / "unet_bf16.bin", tensors)
    stats = load_unet_weights(engine, path)
    unet = {n: p for n, p in engine.parameters_and_names() if n.startswith(UNET_PREFIX)}
    assert stats == {"loaded": len(tensors)} == {"loaded": len(unet)}
    # conv_out is the UNet's out.2 in sgm's names; its value is the file's, rounded to bfloat16.
    bits = (np.ascontiguousarray(tensors["conv_out.weight"], np.float32).view(np.uint32) + 0x8000) >> 16
    expected = (bits << 16).astype(np.uint32).view(np.float32)
    got = unet[UNET_PREFIX + "out.2.weight"].asnumpy()
    assert got.shape == expected.shape and np.array_equal(got, expected)
    assert np.abs(got - tensors["conv_out.weight"]).max() <= 2 ** -8 * np.abs(tensors["conv_out.weight"]).max()
