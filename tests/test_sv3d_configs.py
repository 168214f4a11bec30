"""SV3D configs: the shipped full-size configs carry upstream's values and match the SV3D
checkpoint manifests name for name and shape for shape; the upstream YAML builds unchanged."""
import json
import os

import numpy as np
import pytest
from omegaconf import OmegaConf

from conftest import REFERENCE, ROOT
from svd_ms.checkpoint import check_names, engine_param_shapes, map_upstream_key
from svd_ms.util import instantiate_from_config

# adm_in_channels: cond_aug (256) for u; plus polar and azimuth (512 each) for p.
ADM = {"sv3d_u": 256, "sv3d_p": 1280}
CAMERA_KEYS = {"sv3d_u": [], "sv3d_p": ["polars_rad", "azimuths_rad"]}


@pytest.mark.parametrize("name", sorted(ADM))
def test_full_size_sv3d_config_matches_manifest(name):
    cfg = OmegaConf.load(os.path.join(ROOT, "configs", f"{name}.yaml"))
    assert not any("sgm." in line for line in OmegaConf.to_yaml(cfg).splitlines() if "target:" in line)
    params = cfg.model.params
    assert params.network_config.params.adm_in_channels == ADM[name]
    keys = [e.input_key for e in params.conditioner_config.params.emb_models]
    assert keys == ["cond_frames_without_noise", "cond_frames", "cond_aug"] + CAMERA_KEYS[name]
    assert params.first_stage_config.params.encoder_config.target == "torch.nn.Identity"
    assert params.first_stage_config.params.decoder_config.target.endswith("diffusionmodules.model.Decoder")
    sampler = params.sampler_config.params
    guider = sampler.guider_config
    assert guider.target.endswith("TrianglePredictionGuider")
    assert (guider.params.max_scale, guider.params.num_frames, sampler.num_steps) == (2.5, 21, 50)

    manifest = json.load(open(os.path.join(REFERENCE, "manifest", f"{name}.keys.json")))
    shapes = engine_param_shapes(cfg)
    check_names(shapes, {k: tuple(v) for k, v in manifest.items()}, source=f"manifest {name}")
    used = {k for k in manifest if map_upstream_key(k) is not None}
    assert used == set(shapes), "every manifest tensor is used or ignored, every parameter is in the manifest"
    assert not any(k.startswith("first_stage_model.encoder.") for k in shapes)
    total = sum(int(np.prod(s)) for s in shapes.values())
    print(f"{name}: {len(shapes)} parameters, {total:,} values, {len(manifest) - len(used)} ignored tensors")


@pytest.mark.parametrize("case", ["tiny_sv3d_u", "tiny_sv3d_p"])
def test_upstream_sv3d_yaml_builds_unchanged(case):
    cfg = OmegaConf.load(os.path.join(REFERENCE, f"{case}.sgm.yaml"))
    assert cfg.model.target.startswith("sgm.")
    engine = instantiate_from_config(cfg.model)
    assert type(engine.first_stage_model.encoder).__name__ == "Identity"
    assert not engine.first_stage_model.is_video_decoder


def test_tiny_sv3d_p_converts_and_loads(tmp_path):
    """svd_tools/convert.py takes the upstream SV3D file as it is; the .ckpt fills the engine
    with the upstream values (fp16-exact, so equality is exact)."""
    from safetensors.numpy import load_file

    from svd_ms.checkpoint import load_checkpoint_into
    from svd_tools.convert import convert
    config = os.path.join(REFERENCE, "tiny_sv3d_p.sgm.yaml")
    source = os.path.join(REFERENCE, "tiny_sv3d_p.safetensors")
    convert(source, config, str(tmp_path), log=lambda *a, **k: None)
    engine = instantiate_from_config(OmegaConf.load(config).model)
    info = load_checkpoint_into(engine, str(tmp_path / "tiny_sv3d_p.ckpt"))
    upstream = load_file(source)
    params = dict(engine.parameters_and_names())
    mapped = {k: v for k, v in upstream.items() if map_upstream_key(k) is not None}
    assert info["loaded"] == len(params) == len(mapped)
    for name, value in mapped.items():
        assert np.array_equal(params[name].asnumpy(), value.astype(np.float32)), name
