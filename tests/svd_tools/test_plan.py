"""svd_tools.plan: what the converter will write, planned before a byte is written."""
import numpy as np
import pytest
from safetensors.numpy import save_file

from svd_ms.checkpoint import SafetensorsReader
from svd_ms.errors import ConvertError
from svd_tools.plan import Item, component_file, plan_single, zero_filled_items

TEXT_TOWER = "conditioner.embedders.0.open_clip.model.token_embedding.weight"


def test_single_file_keeps_names_and_ignores_the_text_tower(tmp_path):
    save_file({"model.diffusion_model.out.2.bias": np.zeros(4, np.float16), TEXT_TOWER: np.zeros((3, 2), np.float32)},
              str(tmp_path / "w.safetensors"))
    reader = SafetensorsReader(tmp_path / "w.safetensors")
    items, ignored, odd = plan_single(reader)
    assert [(it.name, it.shape, it.src_dtype, it.op) for it in items] == [
        ("model.diffusion_model.out.2.bias", (4,), "float16", "copy")]
    assert items[0].sources == ((reader, "model.diffusion_model.out.2.bias"),)
    assert list(ignored) == [TEXT_TOWER] and "text tower" in ignored[TEXT_TOWER] and odd == {}


def test_component_file_prefers_the_asked_variant(tmp_path):
    (tmp_path / "unet").mkdir()
    for name in ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors"):
        (tmp_path / "unet" / name).write_bytes(b"x")
    assert component_file(str(tmp_path), "unet", prefer_fp16=True).endswith("model.fp16.safetensors")
    assert component_file(str(tmp_path), "unet", prefer_fp16=False).endswith("diffusion_pytorch_model.safetensors")
    with pytest.raises(ConvertError, match="has no vae weights"):
        component_file(str(tmp_path), "vae", prefer_fp16=False)


def test_zero_fill_only_the_unused_decoder_of_the_conditioner():
    items = [Item("a", (2,), "float16", ()), Item("b", (2,), "float16", ()), Item("c", (2,), "float32", ())]
    expected = {"conditioner.embedders.3.encoder.decoder.conv_in.weight": (4, 4),
                "conditioner.embedders.3.encoder.post_quant_conv.bias": (4,),
                "model.diffusion_model.out.2.bias": (4,), "a": (2,)}
    filled = zero_filled_items(items, expected)
    assert [(it.name, it.shape, it.src_dtype, it.sources) for it in filled] == [
        ("conditioner.embedders.3.encoder.decoder.conv_in.weight", (4, 4), "float16", ()),
        ("conditioner.embedders.3.encoder.post_quant_conv.bias", (4,), "float16", ())]
