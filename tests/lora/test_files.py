"""svd_ms.lora.files: LoRA files are read by the project's one safetensors reader (bfloat16 too),
recognised by their content (never unpickled), and what write_lora writes reads back exactly."""
import numpy as np
import pytest

import convert_helpers as H
from svd_ms.errors import LoRAError
from svd_ms.lora.files import FORMAT, read_lora, read_metadata, write_lora
from svd_ms.lora.names import UNetNames

MODULE = "input_blocks.1.1.transformer_blocks.0.attn1.to_q"
NAMES = UNetNames([MODULE + ".weight", "input_blocks.1.1.transformer_blocks.0.attn1.to_k.weight"])


def test_written_file_reads_back(tmp_path):
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
