"""4-step video, AnimateLCM-SVD style, against AnimateLCM's own pipeline and scheduler
(tiny_animatelcm_svd: a tiny SVD in the diffusers layout, every noise draw recorded).

The diffusers folder is converted through the project's diffusers name map, its UNet is then
loaded again with load_unet_weights (over a scrambled UNet, as AnimateLCM's UNet-only weights go
over a base checkpoint), and the consistency sampler runs the three recorded runs."""
import json
import os

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image

from conftest import REFERENCE, TINY_CONFIG, assert_close

FOLDER = os.path.join(REFERENCE, "tiny_animatelcm_svd")
IMAGE = os.path.join(REFERENCE, "tiny_animatelcm_svd.input.png")
with open(os.path.join(REFERENCE, "tiny_animatelcm_svd.json")) as f:
    CASE = json.load(f)
GUIDANCE = {"cfg_4step": (1.0, 1.2), "nocfg_1step": (1.0, 1.0), "nocfg_2step": (1.0, 1.0)}


def sgm_config(path: str):
    """The sgm config of the tiny diffusers model: tiny_svd's layout with the folder's numbers
    (UNet blocks 32, 64 with attention on the first level only, 1 resnet per level, time embeddings
    of 8; VAE levels 32, 64, 64, 64; CLIP width 32, 2 heads of 16, quick GELU as transformers'
    CLIPVisionConfig defaults to)."""
    cfg = OmegaConf.load(TINY_CONFIG)
    unet = CASE["model_configs"]["unet"]
    clip = CASE["model_configs"]["image_encoder"]
    vae_mult = [c // CASE["model_configs"]["vae"]["block_out_channels"][0]
                for c in CASE["model_configs"]["vae"]["block_out_channels"]]
    network = cfg.model.params.network_config.params
    network.model_channels = unet["block_out_channels"][0]
    network.channel_mult = [c // unet["block_out_channels"][0] for c in unet["block_out_channels"]]
    network.num_res_blocks = unet["layers_per_block"]
    network.attention_resolutions = [1]
    network.adm_in_channels = unet["projection_class_embeddings_input_dim"]
    network.context_dim = unet["cross_attention_dim"]
    network.num_head_channels = unet["block_out_channels"][0] // unet["num_attention_heads"][0]
    embedders = cfg.model.params.conditioner_config.params.emb_models
    embedders[0].params.open_clip_embedding_config.params.arch = {
        "embed_dim": clip["projection_dim"], "image_size": clip["image_size"], "patch_size": clip["patch_size"],
        "width": clip["hidden_size"], "layers": clip["num_hidden_layers"],
        "head_width": clip["hidden_size"] // clip["num_attention_heads"], "quick_gelu": clip["hidden_act"] == "quick_gelu"}
    for index in (1, 2, 4):
        embedders[index].params.outdim = unet["addition_time_embed_dim"]
    embedders[3].params.encoder_config.params.ddconfig.ch_mult = vae_mult
    for part in ("encoder_config", "decoder_config"):
        cfg.model.params.first_stage_config.params[part].params.ch_mult = vae_mult
    from svd_ms.sampling_options import apply_sampling_options
    cfg.model.params.sampler_config = apply_sampling_options(cfg.model.params.sampler_config, sampler="lcm")
    OmegaConf.save(cfg, path)
    return cfg


@pytest.fixture(scope="module")
def reference():
    path = os.path.join(REFERENCE, "tiny_animatelcm_svd.reference.npz")
    assert os.path.isfile(path), f"upstream reference missing: {path}"
    return dict(np.load(path))


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    from svd_ms.pipeline import SVDInferPipeline
    from svd_ms.unet_weights import load_unet_weights
    from svd_tools.convert import convert

    work = tmp_path_factory.mktemp("animatelcm")
    config = str(work / "tiny_animatelcm_svd.sgm.yaml")
    sgm_config(config)
    convert(FOLDER, config, str(work), log=lambda *a, **k: None)
    settings = CASE["common_settings"]
    pipe = SVDInferPipeline(config, str(work / "tiny_animatelcm_svd.ckpt"), num_frames=settings["num_frames"],
                            fps=settings["fps"], motion_bucket_id=settings["motion_bucket_id"],
                            noise_aug_strength=settings["noise_aug_strength"],
                            decode_chunk_size=settings["decode_chunk_size"])
    # The UNet-only path: scramble the UNet, then load the folder's UNet over it.
    for name, param in pipe.engine.parameters_and_names():
        if name.startswith("model.diffusion_model."):
            param.set_data(param * 0.5 + 0.01)
    assert load_unet_weights(pipe.engine, FOLDER)["loaded"] > 0
    return pipe


def lcm_config(low: float, high: float):
    from svd_ms.sampling_options import apply_sampling_options
    base = OmegaConf.load(TINY_CONFIG).model.params.sampler_config
    return apply_sampling_options(base, sampler="lcm", guider="linear", min_guidance_scale=low,
                                  max_guidance_scale=high)


@pytest.mark.parametrize("run", list(CASE["runs"]))
def test_consistency_run(pipe, reference, run):
    r = {k.split(".", 1)[1]: v for k, v in reference.items() if k.startswith(run + ".")}
    steps = CASE["runs"][run]["call_kwargs"]["num_inference_steps"]
    pipe.use_sampler(lcm_config(*GUIDANCE[run]), num_steps=steps)
    assert pipe.num_steps == steps
    assert np.array_equal(pipe.sampler.sigmas(steps), r["sigmas"])
    assert pipe.guider.num_copies == (2 if CASE["runs"][run]["do_classifier_free_guidance"] else 1)
    if pipe.guider.num_copies == 2:
        assert np.array_equal(pipe.guider.frame_scales, r["guidance_scale"].ravel())
    noise = r["scheduler_step_noise"].reshape((-1,) + r["initial_latents_unit"].shape[1:]) \
        if "scheduler_step_noise" in r else np.zeros((0,) + r["initial_latents_unit"].shape[1:], np.float32)
    with Image.open(IMAGE) as im:  # the reference's 96x64 pixels as they are (a file would be cut to 64x64)
        pixels = np.asarray(im.convert("RGB"))
    out = pipe.generate(pixels, latent_noise=r["initial_latents_unit"][0], cond_noise=r["cond_image_noise"],
                        sampler_noise=noise)
    assert_close(f"{run}.final_latents", out["latents"], r["final_latents"][0], rel=2e-4)
    assert_close(f"{run}.frames", out["video"].transpose(0, 2, 3, 1), r["frames"][0], max_abs=2e-3)


def test_unet_weights_refused_when_they_do_not_fit(pipe, tmp_path):
    from safetensors.numpy import load_file, save_file
    from svd_ms.errors import CheckpointMismatchError
    from svd_ms.unet_weights import load_unet_weights

    tensors = load_file(os.path.join(FOLDER, "unet", "diffusion_pytorch_model.safetensors"))
    before = pipe.engine.model.diffusion_model.out[2].weight.asnumpy().copy()
    bad_shape = dict(tensors, **{"conv_out.weight": np.zeros((4, 32, 1, 1), np.float32)})
    extra = dict(tensors, **{"down_blocks.9.resnets.0.conv1.weight": np.zeros((1,), np.float32)})
    missing = {k: v for k, v in tensors.items() if k != "conv_in.bias"}
    cases = [(bad_shape, r"tensor 'conv_out.weight' has shape \(4, 32, 1, 1\), the model's "
                         r"'model.diffusion_model.out.2.weight' is \(4, 32, 3, 3\)"),
             (extra, "tensor 'down_blocks.9.resnets.0.conv1.weight' has no place in this model's UNet"),
             (missing, "no tensor for the UNet's 'model.diffusion_model.input_blocks.0.0.bias'")]
    for index, (content, message) in enumerate(cases):
        path = str(tmp_path / f"unet{index}.safetensors")
        save_file(content, path)
        with pytest.raises(CheckpointMismatchError, match=message) as info:
            load_unet_weights(pipe.engine, path)
        assert "\n" not in str(info.value)
    assert np.array_equal(pipe.engine.model.diffusion_model.out[2].weight.asnumpy(), before)


def test_converter_merges_unet_weights_into_one_checkpoint(tmp_path):
    """svd_tools/convert.py --unet_weights: the base checkpoint with its UNet replaced by a
    diffusers-layout UNet-only file, every other tensor untouched; a misfit is refused."""
    from safetensors.numpy import load_file, save_file

    from svd_ms.checkpoint import MindSporeCkptReader
    from svd_ms.errors import SVDError
    from svd_tools.convert import convert

    config = str(tmp_path / "tiny_animatelcm_svd.sgm.yaml")
    sgm_config(config)
    tensors = load_file(os.path.join(FOLDER, "unet", "diffusion_pytorch_model.safetensors"))
    unet = str(tmp_path / "lcm_unet.safetensors")
    save_file({k: (v * 2 if k == "conv_out.weight" else v) for k, v in tensors.items()}, unet)
    quiet = dict(log=lambda *a, **k: None)
    convert(FOLDER, config, str(tmp_path / "base"), **quiet)
    convert(FOLDER, config, str(tmp_path / "merged"), unet_weights=unet, **quiet)
    base = MindSporeCkptReader(str(tmp_path / "base" / "tiny_animatelcm_svd.ckpt"))
    merged = MindSporeCkptReader(str(tmp_path / "merged" / "tiny_animatelcm_svd_lcm_unet.ckpt"))
    assert sorted(base.keys()) == sorted(merged.keys())
    for key in base.keys():
        factor = 2 if key == "model.diffusion_model.out.2.weight" else 1
        assert np.array_equal(merged.read(key), base.read(key) * factor), key
    bad = str(tmp_path / "bad.safetensors")
    save_file({k: v for k, v in tensors.items() if k != "conv_in.bias"}, bad)
    with pytest.raises(SVDError, match="no tensor for the UNet's 'model.diffusion_model.input_blocks.0.0.bias'"):
        convert(FOLDER, config, str(tmp_path / "bad_out"), unet_weights=bad, **quiet)
    assert not (tmp_path / "bad_out").exists()
