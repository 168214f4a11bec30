"""The sgm model config of a diffusers Stable Video Diffusion folder, from the folder's own JSON.

A diffusers folder describes its model in `unet/config.json`, `vae/config.json`,
`image_encoder/config.json`, `scheduler/scheduler_config.json` and `model_index.json`. The
config derived here holds the numbers a hand-written config (configs/*.yaml) holds for the same
model, for any size of model in that layout, so `--SVD.checkpoint=FOLDER` needs no
`--SVD.config`. `released_model` names the Stability AI release the folder matches, if any: its
sampling defaults are the hand-written config's. A folder whose JSON is missing, unreadable or
contradicts itself is refused in one ConfigError line naming the file and the value.
"""
import json
import os
import re
from typing import Dict, Optional, Tuple

from .errors import ConfigError

T = "svd_ms."  # every target of a derived config lives in the project
UNET_CLASS = "UNetSpatioTemporalConditionModel"
VIDEO_VAE_CLASS = "AutoencoderKLTemporalDecoder"
IMAGE_VAE_CLASS = "AutoencoderKL"  # the image-decoder variants: a per-frame decoder
CLIP_CLASS = "CLIPVisionModelWithProjection"
SCHEDULER_CLASS = "EulerDiscreteScheduler"

# The released models' component numbers (their config.json files); frames and the VAE class
# then tell the releases apart.
RELEASED_UNET = {"in_channels": 8, "out_channels": 4, "block_out_channels": [320, 640, 1280, 1280],
                 "layers_per_block": 2, "num_attention_heads": [5, 10, 20, 20], "cross_attention_dim": 1024,
                 "addition_time_embed_dim": 256, "projection_class_embeddings_input_dim": 768,
                 "transformer_layers_per_block": 1}
RELEASED_VAE = {"block_out_channels": [128, 256, 512, 512], "layers_per_block": 2, "latent_channels": 4,
                "in_channels": 3, "out_channels": 3, "scaling_factor": 0.18215}
VIT_H_14 = {"embed_dim": 1024, "image_size": 224, "patch_size": 14, "width": 1280, "layers": 32, "head_width": 80}
# name: (steps, min guidance, max guidance, frames) of configs/<file>.yaml (upstream's sampling script)
RELEASES = {
    "SVD": (25, 1.0, 2.5, 14),
    "SVD-XT": (30, 1.5, 3.0, 25),
    "SVD-XT 1.1": (30, 1.5, 3.0, 25),
    "SVD image-decoder": (25, 1.0, 2.5, 14),
    "SVD-XT image-decoder": (30, 1.5, 3.0, 25),
}
# A model that matches no release samples with diffusers' StableVideoDiffusionPipeline defaults.
PIPELINE_DEFAULTS = (25, 1.0, 3.0)


def _read_json(folder: str, relative: str, required: bool = True) -> Optional[Dict]:
    path = os.path.join(folder, relative)
    if not os.path.isfile(path):
        if required:
            raise ConfigError(f"diffusers folder {folder!r} cannot be described: {relative} is missing")
        return None
    try:
        with open(path, "r", encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"diffusers folder {folder!r}: {relative} is not readable JSON "
                          f"({str(exc).splitlines()[0][:120]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"diffusers folder {folder!r}: {relative} is not a JSON object")
    return data


class _Json:
    """One component's config.json, whose every refusal names the folder, the file and the key."""

    def __init__(self, folder: str, relative: str, data: Dict):
        self.folder, self.relative, self.data = folder, relative, data

    def fail(self, what: str):
        raise ConfigError(f"diffusers folder {self.folder!r}: {self.relative} {what}")

    def get(self, key, default=None):
        return self.data.get(key, default)

    def int(self, key, default=None) -> int:
        value = self.data.get(key, default)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            self.fail(f"has no usable {key!r} (found {value!r})")
        return value

    def ints(self, key, length: Optional[int] = None, default=None):
        """A per-level list; a single number stands for every level."""
        value = self.data.get(key, default)
        if isinstance(value, int) and not isinstance(value, bool) and length is not None:
            value = [value] * length
        if (not isinstance(value, list) or not value or (length is not None and len(value) != length)
                or any(not isinstance(v, int) or isinstance(v, bool) or v <= 0 for v in value)):
            self.fail(f"has no usable {key!r} (found {value!r}" + (f", expected {length} levels)" if length else ")"))
        return value

    def multiples(self, key) -> Tuple[int, list]:
        """(base, multipliers) of a channel list, e.g. [320, 640, 1280] -> (320, [1, 2, 4])."""
        channels = self.ints(key)
        if any(c % channels[0] for c in channels):
            self.fail(f"{key!r} {channels} is not a multiple of its first level")
        return channels[0], [c // channels[0] for c in channels]


def _same(values, what: str, source: _Json) -> int:
    if len(set(values)) != 1:
        source.fail(f"has a different {what} per level ({values}), which the sgm model cannot build")
    return values[0]


def _unet(unet: _Json, latent: int, context: int) -> Tuple[Dict, int]:
    if unet.get("_class_name") != UNET_CLASS:
        unet.fail(f"describes a {unet.get('_class_name')!r}, not a {UNET_CLASS}")
    model_channels, channel_mult = unet.multiples("block_out_channels")
    levels = len(channel_mult)
    down, up = unet.get("down_block_types"), unet.get("up_block_types")
    if not isinstance(down, list) or not isinstance(up, list) or len(down) != levels or len(up) != levels:
        unet.fail(f"has block types {down!r} / {up!r} that do not give one down and one up block per level")
    attention = [str(kind).startswith("CrossAttn") for kind in down]
    if [str(kind).startswith("CrossAttn") for kind in reversed(up)] != attention:
        unet.fail(f"has up blocks {up} that do not mirror its down blocks {down}")
    heads = unet.ints("num_attention_heads", levels)
    channels = unet.ints("block_out_channels")
    if any(c % h for c, h in zip(channels, heads)):
        unet.fail(f"has {heads} attention heads, which do not divide its channels {channels}")
    head_channels = _same([c // h for c, h in zip(channels, heads)], "channels per attention head", unet)
    time_dim = unet.int("addition_time_embed_dim")
    adm = unet.int("projection_class_embeddings_input_dim")
    if adm != 3 * time_dim:
        unet.fail(f"has projection_class_embeddings_input_dim {adm}, not 3 x addition_time_embed_dim ({3 * time_dim}): "
                  "SVD conditions on fps, motion bucket and noise augmentation")
    if unet.int("in_channels") != 2 * latent or unet.int("out_channels") != latent:
        unet.fail(f"has in/out channels {unet.get('in_channels')}/{unet.get('out_channels')}, but the VAE has "
                  f"{latent} latent channels (expected {2 * latent}/{latent})")
    if unet.int("cross_attention_dim") != context:
        unet.fail(f"has cross_attention_dim {unet.get('cross_attention_dim')}, but the image encoder's projection_dim "
                  f"is {context}")
    depth = unet.ints("transformer_layers_per_block", levels, default=1)
    network = {
        "adm_in_channels": adm, "num_classes": "sequential", "use_checkpoint": True,
        "in_channels": 2 * latent, "out_channels": latent, "model_channels": model_channels,
        "attention_resolutions": [2 ** i for i in reversed(range(levels)) if attention[i]],
        "num_res_blocks": _same(unet.ints("layers_per_block", levels), "layers_per_block", unet),
        "channel_mult": channel_mult, "num_head_channels": head_channels, "use_linear_in_transformer": True,
        "transformer_depth": depth[0] if len(set(depth)) == 1 else depth, "context_dim": context,
        "spatial_transformer_attn_type": "softmax-xformers", "extra_ff_mix_layer": True,
        "use_spatial_context": True, "merge_strategy": "learned_with_images", "video_kernel_size": [3, 1, 1],
    }
    return network, time_dim


def _clip(clip: _Json) -> Tuple[object, int]:
    """(OpenCLIP arch: "ViT-H-14"'s numbers stay implicit as in the hand-written configs, projection size)."""
    if CLIP_CLASS not in (clip.get("architectures") or [CLIP_CLASS]) or clip.get("model_type", "clip_vision_model") \
            != "clip_vision_model":
        clip.fail(f"describes {clip.get('architectures')!r}, not a {CLIP_CLASS}")
    width, heads = clip.int("hidden_size"), clip.int("num_attention_heads")
    if width % heads:
        clip.fail(f"has {heads} attention heads, which do not divide hidden_size {width}")
    if clip.int("intermediate_size") != 4 * width:
        clip.fail(f"has intermediate_size {clip.get('intermediate_size')}; the OpenCLIP tower needs 4 x hidden_size")
    act = clip.get("hidden_act", "quick_gelu")  # transformers' CLIPVisionConfig default
    if act not in ("gelu", "quick_gelu"):
        clip.fail(f"has hidden_act {act!r}; the OpenCLIP tower has gelu or quick_gelu")
    if clip.int("num_channels", 3) != 3:
        clip.fail("does not take RGB images (num_channels is not 3)")
    arch = {"embed_dim": clip.int("projection_dim"), "image_size": clip.int("image_size"),
            "patch_size": clip.int("patch_size"), "width": width, "layers": clip.int("num_hidden_layers"),
            "head_width": width // heads}
    if arch == VIT_H_14 and act == "gelu":
        return None, arch["embed_dim"]
    return dict(arch, quick_gelu=True) if act == "quick_gelu" else arch, arch["embed_dim"]


def _ddconfig(vae: _Json, attn_type: str) -> Dict:
    ch, ch_mult = vae.multiples("block_out_channels")
    down = vae.get("down_block_types", ["DownEncoderBlock2D"] * len(ch_mult))
    if not isinstance(down, list) or len(down) != len(ch_mult) or set(down) != {"DownEncoderBlock2D"}:
        vae.fail(f"has down_block_types {down!r}; expected one DownEncoderBlock2D per level")
    return {"attn_type": attn_type, "double_z": True, "z_channels": vae.int("latent_channels"), "resolution": 256,
            "in_channels": vae.int("in_channels", 3), "out_ch": vae.int("out_channels", 3), "ch": ch,
            "ch_mult": ch_mult, "num_res_blocks": vae.int("layers_per_block"), "attn_resolutions": [],
            "dropout": 0.0}


def _first_stage(vae: _Json) -> Dict:
    kind = vae.get("_class_name")
    if kind == IMAGE_VAE_CLASS:
        return {"target": T + "models.autoencoder.AutoencoderKL",
                "params": {"embed_dim": vae.int("latent_channels"), "monitor": "val/rec_loss",
                           "ddconfig": _ddconfig(vae, "vanilla-xformers"), "lossconfig": {"target": "torch.nn.Identity"}}}
    if kind != VIDEO_VAE_CLASS:
        vae.fail(f"describes a {kind!r}, not a {VIDEO_VAE_CLASS} (or the image decoder's {IMAGE_VAE_CLASS})")
    dd = _ddconfig(vae, "vanilla")
    return {"target": T + "models.autoencoder.AutoencodingEngine",
            "params": {"loss_config": {"target": "torch.nn.Identity"},
                       "regularizer_config": {"target": T + "modules.autoencoding.regularizers.DiagonalGaussianRegularizer"},
                       "encoder_config": {"target": T + "modules.diffusionmodules.model.Encoder", "params": dd},
                       "decoder_config": {"target": T + "modules.autoencoding.temporal_ae.VideoDecoder",
                                          "params": dict(dd, video_kernel_size=[3, 1, 1])}}}


def _conditioner(arch, time_dim: int, vae: _Json) -> Dict:
    def timestep(key):
        return {"input_key": key, "is_trainable": False, "target": T + "modules.encoders.modules.ConcatTimestepEmbedderND",
                "params": {"outdim": time_dim}}

    clip_params = {"freeze": True} if arch is None else {"freeze": True, "arch": arch}
    encoder = {"target": T + "models.autoencoder.AutoencoderKLModeOnly",
               "params": {"embed_dim": vae.int("latent_channels"), "monitor": "val/rec_loss",
                          "ddconfig": _ddconfig(vae, "vanilla-xformers"), "lossconfig": {"target": "torch.nn.Identity"}}}
    return {"target": T + "modules.GeneralConditioner", "params": {"emb_models": [
        {"is_trainable": False, "input_key": "cond_frames_without_noise",
         "target": T + "modules.encoders.modules.FrozenOpenCLIPImagePredictionEmbedder",
         "params": {"n_cond_frames": 1, "n_copies": 1, "open_clip_embedding_config": {
             "target": T + "modules.encoders.modules.FrozenOpenCLIPImageEmbedder", "params": clip_params}}},
        timestep("fps_id"), timestep("motion_bucket_id"),
        {"input_key": "cond_frames", "is_trainable": False,
         "target": T + "modules.encoders.modules.VideoPredictionEmbedderWithEncoder",
         "params": {"disable_encoder_autocast": True, "n_cond_frames": 1, "n_copies": 1, "is_ae": True,
                    "encoder_config": encoder}},
        timestep("cond_aug")]}}


def _sampler(scheduler: Optional[_Json], sampling: Tuple[int, float, float, int]) -> Dict:
    discretization = {"sigma_max": 700.0}
    if scheduler is not None:
        if scheduler.get("_class_name", SCHEDULER_CLASS) != SCHEDULER_CLASS:
            scheduler.fail(f"names a {scheduler.get('_class_name')!r}; SVD samples with EDM sigmas "
                           f"({SCHEDULER_CLASS} with Karras sigmas)")
        if scheduler.get("prediction_type", "v_prediction") != "v_prediction":
            scheduler.fail(f"has prediction_type {scheduler.get('prediction_type')!r}; SVD predicts v")
        discretization["sigma_max"] = float(scheduler.get("sigma_max", 700.0))
        if float(scheduler.get("sigma_min", 0.002)) != 0.002:
            discretization["sigma_min"] = float(scheduler.get("sigma_min"))
    steps, low, high, frames = sampling
    return {"target": T + "modules.diffusionmodules.sampling.EulerEDMSampler",
            "params": {"num_steps": steps,
                       "discretization_config": {"target": T + "modules.diffusionmodules.discretizer.EDMDiscretization",
                                                 "params": discretization},
                       "guider_config": {"target": T + "modules.diffusionmodules.guiders.LinearPredictionGuider",
                                         "params": {"max_scale": high, "min_scale": low, "num_frames": frames}}}}


def released_model(folder: str, unet: Dict, vae: Dict, clip_arch) -> Optional[str]:
    """The Stability AI release whose layout and numbers the folder has, or None. SVD-XT and
    XT 1.1 share every number: the folder's name (the cache keeps the repository's) tells them apart."""
    if clip_arch is not None or any(unet.get(k) != v for k, v in RELEASED_UNET.items() if k != "transformer_layers_per_block") \
            or unet.get("transformer_layers_per_block", 1) not in (1, [1] * 4) \
            or any(vae.get(k) != v for k, v in RELEASED_VAE.items()):
        return None
    frames = unet.get("num_frames")
    if frames not in (14, 25):
        return None
    name = "SVD" if frames == 14 else "SVD-XT"
    if vae.get("_class_name") == IMAGE_VAE_CLASS:
        return name + " image-decoder"
    parts = os.path.abspath(folder).lower().split(os.sep)
    # A cache snapshot is models--owner--name/snapshots/<revision>: the repository names it.
    label = parts[-3] if len(parts) > 2 and parts[-2] == "snapshots" else parts[-1]
    return name + " 1.1" if name == "SVD-XT" and re.search(r"1[-_.]1", label) else name


def _check_index(folder: str, index: Optional[Dict], classes: Dict[str, str]):
    if index is None:
        return
    source = _Json(folder, "model_index.json", index)
    if index.get("_class_name", "StableVideoDiffusionPipeline") != "StableVideoDiffusionPipeline":
        source.fail(f"describes a {index.get('_class_name')!r}, not a StableVideoDiffusionPipeline")
    for component, found in classes.items():
        entry = index.get(component)
        if entry is not None and (not isinstance(entry, list) or len(entry) != 2 or entry[1] != found):
            source.fail(f"says {component} is {entry!r}, but {component}/ holds a {found!r}")


def describe_folder(folder: str) -> Tuple[Dict, Optional[str]]:
    """(sgm model config as a dict, name of the matching release or None) of a diffusers folder."""
    folder = os.fspath(folder)
    unet = _Json(folder, "unet/config.json", _read_json(folder, os.path.join("unet", "config.json")))
    vae = _Json(folder, "vae/config.json", _read_json(folder, os.path.join("vae", "config.json")))
    clip = _Json(folder, "image_encoder/config.json", _read_json(folder, os.path.join("image_encoder", "config.json")))
    scheduler_data = _read_json(folder, os.path.join("scheduler", "scheduler_config.json"), required=False)
    scheduler = None if scheduler_data is None else _Json(folder, "scheduler/scheduler_config.json", scheduler_data)
    arch, context = _clip(clip)
    first_stage = _first_stage(vae)
    network, time_dim = _unet(unet, vae.int("latent_channels"), context)
    classes = {"unet": unet.get("_class_name"), "vae": vae.get("_class_name"),
               "image_encoder": (clip.get("architectures") or [CLIP_CLASS])[0]}
    _check_index(folder, _read_json(folder, "model_index.json", required=False), classes)
    name = released_model(folder, unet.data, vae.data, arch)
    sampling = RELEASES[name] if name else PIPELINE_DEFAULTS + (unet.int("num_frames", 14),)
    config = {"model": {"target": T + "models.diffusion.DiffusionEngine", "params": {
        "scale_factor": float(vae.get("scaling_factor", 0.18215)), "disable_first_stage_autocast": True,
        "ckpt_path": None,
        "denoiser_config": {"target": T + "modules.diffusionmodules.denoiser.Denoiser", "params": {
            "scaling_config": {"target": T + "modules.diffusionmodules.denoiser_scaling.VScalingWithEDMcNoise"}}},
        "network_config": {"target": T + "modules.diffusionmodules.video_model.VideoUNet", "params": network},
        "conditioner_config": _conditioner(arch, time_dim, vae),
        "first_stage_config": first_stage,
        "sampler_config": _sampler(scheduler, sampling)}}}
    return config, name


def model_config_for(config, checkpoint, log=print):
    """The model config a run uses: `config` when given; without one, the config derived from a
    diffusers folder (or cached Hugging Face model id) given as the checkpoint."""
    if config is not None or checkpoint is None:
        return config
    from .checkpoint import DIFFUSERS_FOLDER, checkpoint_format
    from .hub import resolve_checkpoint
    folder = resolve_checkpoint(checkpoint)
    if checkpoint_format(folder) != DIFFUSERS_FOLDER:
        raise ConfigError(f"config is required with checkpoint {os.fspath(checkpoint)!r}: only a diffusers folder "
                          "describes its own model (give e.g. configs/svd_xt.yaml)")
    derived, name = describe_folder(folder)
    log(f"model config derived from {folder}: " + (f"matches the released {name}" if name else
                                                   "matches no released SVD model (its own numbers are used)"))
    return derived
