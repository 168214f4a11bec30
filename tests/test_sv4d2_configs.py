"""SV4D 2.0 configs: the shipped full-size configs carry upstream's values and match the
checkpoint manifests name for name and shape for shape; the upstream tiny YAML builds unchanged
and holds every tensor of the tiny checkpoint."""
import json
import os

import numpy as np
import pytest
from omegaconf import OmegaConf

from conftest import REFERENCE, ROOT
from svd_ms.checkpoint import check_names, engine_param_shapes, map_upstream_key
from svd_ms.util import instantiate_from_config

# name: (N_TIME, N_VIEW, use_3d_attention, guider max_scale)
UPSTREAM = {"sv4d2": (12, 4, True, 1.5), "sv4d2_8views": (5, 8, False, 2.0)}


@pytest.mark.parametrize("name", sorted(UPSTREAM))
def test_full_size_sv4d2_config_matches_manifest(name):
    cfg = OmegaConf.load(os.path.join(ROOT, "configs", f"{name}.yaml"))
    assert not any("sgm." in line for line in OmegaConf.to_yaml(cfg).splitlines() if "target:" in line)
    n_time, n_view, use_3d, max_scale = UPSTREAM[name]
    assert (cfg.N_TIME, cfg.N_VIEW, cfg.N_FRAMES) == (n_time, n_view, n_time * n_view)
    params = cfg.model.params
    unet = params.network_config.params
    assert unet.use_3d_attention is use_3d and unet.use_camera_emb and unet.use_motion_attention
    assert unet.adm_in_channels == 4 * unet.model_channels == 1280
    keys = [e.input_key for e in params.conditioner_config.params.emb_models]
    assert keys == ["cond_frames_without_noise", "cond_frames", "polar_rad", "azimuth_rad", "cond_view",
                    "cond_motion"]
    guider = params.sampler_config.params.guider_config
    assert guider.target.endswith("SpatiotemporalPredictionGuider")
    assert (guider.params.max_scale, guider.params.num_frames, guider.params.num_views) == (
        max_scale, n_time * n_view, n_view)

    manifest = json.load(open(os.path.join(REFERENCE, "manifest", f"{name}.keys.json")))
    shapes = engine_param_shapes(cfg)  # parameters are not materialised: seconds, not 12 GB
    check_names(shapes, {k: tuple(v) for k, v in manifest.items()}, source=f"manifest {name}")
    used = {k for k in manifest if map_upstream_key(k) is not None}
    assert used == set(shapes), "every manifest tensor is used or ignored, every parameter is in the manifest"
    assert all(tuple(manifest[k]) == shapes[k] for k in used)
    total = sum(int(np.prod(s)) for s in shapes.values())
    print(f"{name}: {len(shapes)} parameters, {total:,} values, {len(manifest) - len(used)} ignored tensors")


def test_upstream_tiny_sv4d2_yaml_builds_and_holds_the_checkpoint():
    from safetensors.numpy import load_file
    cfg = OmegaConf.load(os.path.join(REFERENCE, "tiny_sv4d2.sgm.yaml"))
    assert cfg.model.target.startswith("sgm.")
    engine = instantiate_from_config(cfg.model)
    shapes = engine_param_shapes(engine)
    upstream = load_file(os.path.join(REFERENCE, "tiny_sv4d2.safetensors"))
    mapped = {k: tuple(v.shape) for k, v in upstream.items() if map_upstream_key(k) is not None}
    assert mapped == shapes
    assert sum(int(v.size) for v in upstream.values()) == json.load(
        open(os.path.join(REFERENCE, "tiny_sv4d2.json")))["num_params"]
