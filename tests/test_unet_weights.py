"""svd_ms.unet_weights: a diffusers-layout UNet-only file over a built engine. The file is found
in a folder, accepted by its content (safetensors, whatever its name; never a pickle), read by the
project's one reader (bfloat16 included), and every UNet parameter is replaced."""
import os

import numpy as np
import pytest
from safetensors.numpy import load_file

import convert_helpers as H
from svd_ms.errors import CheckpointError
from svd_ms.unet_weights import UNET_PREFIX, load_unet_weights, resolve_unet_file
from test_animatelcm import FOLDER, sgm_config

UNET_FILE = os.path.join(FOLDER, "unet", "diffusion_pytorch_model.safetensors")


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
