"""svd_ms.app.capabilities: what a model's conditioner says it can do, and the LoRA folder a
request may pick from, refusing any name that is not one of its files."""
import os
from types import SimpleNamespace

import pytest

from svd_ms.app.capabilities import LoRAFolder, capabilities_of
from svd_ms.errors import ParamError, UsageError

SVD_KEYS = ["cond_frames_without_noise", "fps_id", "motion_bucket_id", "cond_frames", "cond_aug"]
SV3D_U_KEYS = ["cond_frames_without_noise", "cond_frames", "cond_aug"]


def test_capabilities_follow_the_conditioner():
    svd = capabilities_of(SimpleNamespace(input_keys=SVD_KEYS), None, None)
    assert svd.kinds() == ["image_to_video", "video_to_video"] and svd.chained and not svd.orbit
    assert not svd.fast_preset and not svd.lora
    assert capabilities_of(SimpleNamespace(input_keys=SVD_KEYS), "lcm", "/x").fast_preset
    sv3d_u = capabilities_of(SimpleNamespace(input_keys=SV3D_U_KEYS), None, None)
    assert sv3d_u.kinds() == ["orbit"] and not sv3d_u.camera and not sv3d_u.chained
    sv3d_p = capabilities_of(SimpleNamespace(input_keys=SV3D_U_KEYS + ["polars_rad", "azimuths_rad"]), None, None)
    assert sv3d_p.kinds() == ["orbit"] and sv3d_p.camera


def test_lora_folder_names_only_its_own_files(tmp_path):
    folder = tmp_path / "adapters"
    (folder / "sub").mkdir(parents=True)
    for name in ("b.safetensors", "a.safetensors", ".hidden.safetensors", "notes.txt", "sub/c.safetensors"):
        (folder / name).write_bytes(b"x")
    (tmp_path / "outside.safetensors").write_bytes(b"x")
    lora = LoRAFolder(str(folder))
    assert lora.names() == ["a.safetensors", "b.safetensors"]
    assert lora.path_of("a.safetensors") == os.path.join(str(folder.resolve()), "a.safetensors")
    for bad in ("../outside.safetensors", str(tmp_path / "outside.safetensors"), "sub/c.safetensors",
                ".hidden.safetensors", "notes.txt", "absent.safetensors", "..\\outside.safetensors", ""):
        with pytest.raises(ParamError, match="not one of the files") as err:
            lora.path_of(bad)
        assert err.value.field == "lora"
    assert lora.check([("a.safetensors", "0.5")]) == [("a.safetensors", 0.5)]
    with pytest.raises(ParamError, match="picked twice"):
        lora.check([("a.safetensors", 1), ("a.safetensors", 2)])
    with pytest.raises(ParamError, match="finite"):
        lora.check([("a.safetensors", float("inf"))])
    with pytest.raises(UsageError, match="not a folder"):
        LoRAFolder(str(tmp_path / "outside.safetensors"))
