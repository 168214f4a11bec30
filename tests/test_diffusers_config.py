"""The model config of a diffusers folder, from its JSON files (svd_ms/diffusers_config.py).

The full-size layouts are small fake folders holding the released models' JSON files (the
values of the public stabilityai/stable-video-diffusion-img2vid* repositories, below); the
config derived from each must equal the hand-written configs/*.yaml of that model, and name it.
The tiny shared folder is checked against the numbers its README gives. A folder whose JSON is
missing or contradicts itself is refused in one line naming the file.
"""
import copy
import json
import os

import pytest
from omegaconf import OmegaConf

from conftest import REFERENCE, ROOT
from svd_ms.diffusers_config import describe_folder, model_config_for
from svd_ms.errors import ConfigError

FOLDER = os.path.join(REFERENCE, "tiny_animatelcm_svd")

# ---- the released models' JSON files (stabilityai/stable-video-diffusion-img2vid-xt; img2vid has num_frames 14)
UNET = {
    "_class_name": "UNetSpatioTemporalConditionModel", "_diffusers_version": "0.24.0.dev0",
    "addition_time_embed_dim": 256, "block_out_channels": [320, 640, 1280, 1280], "cross_attention_dim": 1024,
    "down_block_types": ["CrossAttnDownBlockSpatioTemporal", "CrossAttnDownBlockSpatioTemporal",
                         "CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"],
    "in_channels": 8, "layers_per_block": 2, "num_attention_heads": [5, 10, 20, 20], "num_frames": 25,
    "out_channels": 4, "projection_class_embeddings_input_dim": 768, "sample_size": 96,
    "transformer_layers_per_block": 1,
    "up_block_types": ["UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal",
                       "CrossAttnUpBlockSpatioTemporal"],
}
VAE = {
    "_class_name": "AutoencoderKLTemporalDecoder", "_diffusers_version": "0.24.0.dev0",
    "block_out_channels": [128, 256, 512, 512], "down_block_types": ["DownEncoderBlock2D"] * 4, "force_upcast": True,
    "in_channels": 3, "latent_channels": 4, "layers_per_block": 2, "out_channels": 3, "sample_size": 768,
    "scaling_factor": 0.18215,
}
# The image-decoder checkpoints have no diffusers release; their VAE is Stable Diffusion's
# AutoencoderKL, whose config.json this is.
IMAGE_VAE = {
    "_class_name": "AutoencoderKL", "act_fn": "silu", "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4, "in_channels": 3, "latent_channels": 4, "layers_per_block": 2,
    "norm_num_groups": 32, "out_channels": 3, "sample_size": 768, "scaling_factor": 0.18215,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
}
IMAGE_ENCODER = {
    "architectures": ["CLIPVisionModelWithProjection"], "attention_dropout": 0.0, "dropout": 0.0, "hidden_act": "gelu",
    "hidden_size": 1280, "image_size": 224, "initializer_factor": 1.0, "initializer_range": 0.02,
    "intermediate_size": 5120, "layer_norm_eps": 1e-05, "model_type": "clip_vision_model", "num_attention_heads": 16,
    "num_channels": 3, "num_hidden_layers": 32, "patch_size": 14, "projection_dim": 1024, "torch_dtype": "float16",
    "transformers_version": "4.34.0.dev0",
}
SCHEDULER = {
    "_class_name": "EulerDiscreteScheduler", "_diffusers_version": "0.24.0.dev0", "beta_end": 0.012,
    "beta_schedule": "scaled_linear", "beta_start": 0.00085, "clip_sample": False, "interpolation_type": "linear",
    "num_train_timesteps": 1000, "prediction_type": "v_prediction", "set_alpha_to_one": False, "sigma_max": 700.0,
    "sigma_min": 0.002, "skip_prk_steps": True, "steps_offset": 1, "timestep_spacing": "leading",
    "timestep_type": "continuous", "trained_betas": None, "use_karras_sigmas": True,
}
MODEL_INDEX = {
    "_class_name": "StableVideoDiffusionPipeline", "_diffusers_version": "0.24.0.dev0",
    "feature_extractor": ["transformers", "CLIPImageProcessor"],
    "image_encoder": ["transformers", "CLIPVisionModelWithProjection"],
    "scheduler": ["diffusers", "EulerDiscreteScheduler"],
    "unet": ["diffusers", "UNetSpatioTemporalConditionModel"],
    "vae": ["diffusers", "AutoencoderKLTemporalDecoder"],
}
REVISION = "a" * 40


def fake_folder(path, frames=25, vae=VAE, **changes):
    """A folder of the released JSON files (no weights); `changes` = {file: {key: value}}."""
    files = {"model_index.json": dict(MODEL_INDEX, vae=["diffusers", vae["_class_name"]]),
             "unet/config.json": dict(UNET, num_frames=frames), "vae/config.json": vae,
             "image_encoder/config.json": IMAGE_ENCODER, "scheduler/scheduler_config.json": SCHEDULER}
    for name, content in files.items():
        content = copy.deepcopy(content)
        content.update(changes.get(name, {}))
        os.makedirs(os.path.dirname(os.path.join(path, name)), exist_ok=True)
        with open(os.path.join(path, name), "w") as f:
            json.dump(content, f)
    return str(path)


@pytest.mark.parametrize("name,frames,vae,folder,config", [
    ("SVD", 14, VAE, "stable-video-diffusion-img2vid", "svd.yaml"),
    ("SVD-XT", 25, VAE, "stable-video-diffusion-img2vid-xt", "svd_xt.yaml"),
    ("SVD-XT 1.1", 25, VAE, f"models--stabilityai--stable-video-diffusion-img2vid-xt-1-1/snapshots/{REVISION}",
     "svd_xt_1_1.yaml"),
    ("SVD image-decoder", 14, IMAGE_VAE, "svd_image_decoder", "svd_image_decoder.yaml"),
    ("SVD-XT image-decoder", 25, IMAGE_VAE, "svd_xt_image_decoder", "svd_xt_image_decoder.yaml"),
])
def test_released_layouts_give_the_hand_written_configs(tmp_path, name, frames, vae, folder, config):
    derived, matched = describe_folder(fake_folder(tmp_path / folder, frames, vae))
    assert matched == name
    assert derived == OmegaConf.to_container(OmegaConf.load(os.path.join(ROOT, "configs", config)))


def test_tiny_folder_has_the_numbers_of_its_readme():
    """tiny_animatelcm_svd per the reference README: UNet blocks (32, 64), 1 layer per block,
    cross-attention 32; VAE levels (32, 64, 64, 64); CLIP hidden 32, 2 layers, projection 32
    (2 heads and quick GELU in its config.json); 5 frames."""
    derived, matched = describe_folder(FOLDER)
    assert matched is None
    params = derived["model"]["params"]
    unet = params["network_config"]["params"]
    assert (unet["model_channels"], unet["channel_mult"], unet["num_res_blocks"], unet["context_dim"]) == (32, [1, 2], 1, 32)
    assert unet["attention_resolutions"] == [1] and unet["num_head_channels"] == 16 and unet["adm_in_channels"] == 24
    embedders = params["conditioner_config"]["params"]["emb_models"]
    assert embedders[0]["params"]["open_clip_embedding_config"]["params"]["arch"] == {
        "embed_dim": 32, "image_size": 224, "patch_size": 14, "width": 32, "layers": 2, "head_width": 16,
        "quick_gelu": True}
    assert [e["params"]["outdim"] for e in embedders if "outdim" in e.get("params", {})] == [8, 8, 8]
    for dd in (embedders[3]["params"]["encoder_config"]["params"]["ddconfig"],
               params["first_stage_config"]["params"]["decoder_config"]["params"]):
        assert (dd["ch"], dd["ch_mult"], dd["num_res_blocks"]) == (32, [1, 2, 2, 2], 2)
    sampler = params["sampler_config"]["params"]
    assert sampler["guider_config"]["params"] == {"max_scale": 3.0, "min_scale": 1.0, "num_frames": 5}
    assert sampler["num_steps"] == 25 and sampler["discretization_config"]["params"] == {"sigma_max": 700.0}


@pytest.mark.parametrize("changes,words", [
    ({"unet/config.json": {"projection_class_embeddings_input_dim": 512}},
     r"unet/config.json has projection_class_embeddings_input_dim 512, not 3 x addition_time_embed_dim \(768\)"),
    ({"unet/config.json": {"cross_attention_dim": 768}},
     r"unet/config.json has cross_attention_dim 768, but the image encoder's projection_dim is 1024"),
    ({"unet/config.json": {"up_block_types": ["CrossAttnUpBlockSpatioTemporal"] * 4}}, r"do not mirror its down blocks"),
    ({"unet/config.json": {"num_attention_heads": [5, 10, 10, 20]}}, r"different channels per attention head"),
    ({"unet/config.json": {"block_out_channels": "wide"}}, r"unet/config.json has no usable 'block_out_channels'"),
    ({"unet/config.json": {"_class_name": "UNet2DConditionModel"}}, r"describes a 'UNet2DConditionModel'"),
    ({"unet/config.json": {"in_channels": 4}}, r"in/out channels 4/4, but the VAE has 4 latent channels"),
    ({"vae/config.json": {"_class_name": "AutoencoderTiny"}}, r"vae/config.json describes a 'AutoencoderTiny'"),
    ({"image_encoder/config.json": {"intermediate_size": 4096}}, r"needs 4 x hidden_size"),
    ({"model_index.json": {"vae": ["diffusers", "AutoencoderKL"]}},
     r"model_index.json says vae is \['diffusers', 'AutoencoderKL'\], but vae/ holds a 'AutoencoderKLTemporalDecoder'"),
    ({"scheduler/scheduler_config.json": {"prediction_type": "epsilon"}}, r"prediction_type 'epsilon'; SVD predicts v"),
])
def test_contradictory_json_is_refused_in_one_line(tmp_path, changes, words):
    folder = fake_folder(tmp_path / "bad", **changes)
    with pytest.raises(ConfigError, match=words) as info:
        describe_folder(folder)
    assert "\n" not in str(info.value) and repr(folder) in str(info.value)


def test_missing_or_unreadable_json_is_refused(tmp_path):
    folder = fake_folder(tmp_path / "missing")
    os.remove(os.path.join(folder, "vae", "config.json"))
    with pytest.raises(ConfigError, match=r"cannot be described: vae/config.json is missing"):
        describe_folder(folder)
    folder = fake_folder(tmp_path / "garbled")
    with open(os.path.join(folder, "unet", "config.json"), "w") as f:
        f.write("{not json")
    with pytest.raises(ConfigError, match=r"unet/config.json is not readable JSON") as info:
        describe_folder(folder)
    assert "\n" not in str(info.value)
    # Scheduler and model index may be absent: the defaults are the released ones.
    folder = fake_folder(tmp_path / "bare")
    os.remove(os.path.join(folder, "model_index.json"))
    os.remove(os.path.join(folder, "scheduler", "scheduler_config.json"))
    assert describe_folder(folder)[1] == "SVD-XT"


def test_model_config_for_a_run(tmp_path):
    from conftest import TINY_CONFIG, TINY_WEIGHTS

    assert model_config_for(TINY_CONFIG, FOLDER) == TINY_CONFIG  # a given config always wins
    assert model_config_for(None, None) is None
    lines = []
    derived = model_config_for(None, FOLDER, log=lines.append)
    assert derived == describe_folder(FOLDER)[0]
    assert lines == [f"model config derived from {FOLDER}: matches no released SVD model (its own numbers are used)"]
    with pytest.raises(ConfigError, match=r"config is required with checkpoint .*tiny_svd.safetensors': only a "
                                          r"diffusers folder describes its own model"):
        model_config_for(None, TINY_WEIGHTS)
