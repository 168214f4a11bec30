"""DeepCache against DeepCache's own SVD pipeline (tests/deepcache: arrays made by deepcache==0.1.1's
unchanged code with tests/deepcache/make_reference.py, on the shared tiny diffusers SVD with a
2-resnet UNet). Our run: the folder converted through the project's converter, the same image,
noise augmentation draw and starting latents, EDM Euler without guidance, in graph mode."""
import json
import os

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image

from conftest import REFERENCE, TINY_CONFIG, assert_close
from engine_fixtures import graph_mode

HERE = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "deepcache")
with open(os.path.join(HERE, "reference.json")) as f:
    META = json.load(f)
SETTINGS = META["settings"]
IMAGE = os.path.join(REFERENCE, "tiny_animatelcm_svd.input.png")


@pytest.fixture(scope="module")
def reference():
    return dict(np.load(os.path.join(HERE, "reference.npz")))


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    import test_animatelcm
    from svd_ms.pipeline import SVDInferPipeline
    from svd_tools.convert import convert

    work = tmp_path_factory.mktemp("deepcache")
    folder = work / "folder"
    folder.mkdir()
    shared = os.path.join(REFERENCE, "tiny_animatelcm_svd")
    for part in ("vae", "image_encoder", "feature_extractor", "scheduler", "model_index.json"):
        os.symlink(os.path.join(shared, part), folder / part)
    os.symlink(os.path.join(HERE, "tiny_deepcache_unet"), folder / "unet")
    config = str(work / "tiny_deepcache.sgm.yaml")
    test_animatelcm.sgm_config(config)
    cfg = OmegaConf.load(config)
    cfg.model.params.network_config.params.num_res_blocks = META["unet_config"]["layers_per_block"]
    # DeepCache's pipeline samples with diffusers' Euler scheduler: sgm's EDM Euler, no churn
    cfg.model.params.sampler_config = OmegaConf.load(TINY_CONFIG).model.params.sampler_config
    OmegaConf.save(cfg, config)
    convert(str(folder), config, str(work), log=lambda *a, **k: None)
    return SVDInferPipeline(config, str(work / "folder.ckpt"), num_frames=SETTINGS["num_frames"], fps=SETTINGS["fps"],
                            motion_bucket_id=SETTINGS["motion_bucket_id"],
                            noise_aug_strength=SETTINGS["noise_aug_strength"],
                            decode_chunk_size=SETTINGS["decode_chunk_size"], num_steps=SETTINGS["num_inference_steps"],
                            min_guidance_scale=SETTINGS["min_guidance_scale"],
                            max_guidance_scale=SETTINGS["max_guidance_scale"])


def run(pipe, reference, name, **cache):
    with graph_mode():
        # the PNG's own 64x96 pixels, as DeepCache's pipeline took them (a path would be resized to 64x64)
        pixels = np.asarray(Image.open(IMAGE).convert("RGB"))
        return pipe.generate(pixels, latent_noise=reference["initial_latents_unit"],
                             cond_noise=reference[f"{name}.cond_noise"][None], **cache)


@pytest.mark.parametrize("name", ["interval2_branch0", "interval3_branch2"])
def test_matches_deepcache_svd_pipeline(pipe, reference, name):
    spec = next(r for r in META["runs"] if r["name"] == name)
    out = run(pipe, reference, name, cache="deepcache", cache_interval=spec["cache_interval"],
              cache_branch=spec["cache_branch"])
    assert_close(f"{name} latents", out.latents, reference[f"{name}.latents"], rel=2e-4)
    assert_close(f"{name} frames", out.video.transpose(0, 2, 3, 1), reference[f"{name}.frames"], max_abs=2e-3)
    # the cache changed the result: the uncached video is far from it (so the test can fail)
    gap = np.abs(reference[f"{name}.latents"] - reference["uncached.latents"]).max()
    assert gap > 100 * 2e-4 * np.abs(reference["uncached.latents"]).max()
