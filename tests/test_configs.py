"""Configs: upstream targets resolve, full-size configs build and match the checkpoint manifests."""
import json
import os

import pytest
from omegaconf import OmegaConf

from conftest import REFERENCE, ROOT, TINY_CONFIG
from svd_ms.checkpoint import check_names, engine_param_shapes, map_upstream_key
from svd_ms.util import instantiate_from_config, resolve_target

FULL = {"svd": "svd", "svd_xt": "svd", "svd_xt_1_1": "svd", "svd_image_decoder": "svd_image_decoder",
        "svd_xt_image_decoder": "svd_image_decoder"}
GUIDER = {"svd": (1.0, 2.5, 14, 25), "svd_xt": (1.5, 3.0, 25, 30), "svd_xt_1_1": (1.5, 3.0, 25, 30),
          "svd_image_decoder": (1.0, 2.5, 14, 25), "svd_xt_image_decoder": (1.5, 3.0, 25, 30)}


def test_upstream_targets_resolve():
    assert resolve_target("sgm.models.diffusion.DiffusionEngine") == "svd_ms.models.diffusion.DiffusionEngine"
    assert type(instantiate_from_config({"target": "torch.nn.Identity"})).__name__ == "Identity"


def test_upstream_config_loads_unchanged():
    cfg = OmegaConf.load(TINY_CONFIG)
    assert cfg.model.target.startswith("sgm.")
    engine = instantiate_from_config(cfg.model)
    assert engine.model.diffusion_model.__class__.__name__ == "VideoUNet"


@pytest.mark.parametrize("name", sorted(FULL))
def test_full_size_config_matches_manifest(name):
    cfg = OmegaConf.load(os.path.join(ROOT, "configs", f"{name}.yaml"))
    assert not any("sgm." in line for line in OmegaConf.to_yaml(cfg).splitlines() if "target:" in line)
    sampler = cfg.model.params.sampler_config.params
    guider = sampler.guider_config.params
    assert (guider.min_scale, guider.max_scale, guider.num_frames, sampler.num_steps) == GUIDER[name]
    manifest = json.load(open(os.path.join(REFERENCE, "manifest", f"{FULL[name]}.keys.json")))
    shapes = engine_param_shapes(cfg)
    check_names(shapes, {k: tuple(v) for k, v in manifest.items()}, source=f"manifest {FULL[name]}")
    used = {k for k in manifest if map_upstream_key(k) is not None}
    assert used == set(shapes), "every manifest tensor is used or ignored, every parameter is in the manifest"
    total = sum(int(__import__("numpy").prod(s)) for s in shapes.values())
    print(f"{name}: {len(shapes)} parameters, {total:,} values, {len(manifest) - len(used)} ignored tensors")
