"""The training config: `base:` names an inference config whose model is the starting point,
`train:` and `data:` are filled from DEFAULTS, and every setting is checked before a model is built."""
import os
from typing import Sequence

from omegaconf import DictConfig, OmegaConf

from .. import policy
from ..errors import ConfigError
from ..lora import LoRASettings
from ..util import check_targets, load_config

DEFAULTS = {
    "train": {
        "checkpoint": None,            # initial weights (.safetensors or .ckpt); null: random (demo)
        "output_dir": "outputs/train",
        "seed": 42,
        "max_steps": 1000,              # optimizer steps
        "batch_size": 1,                # videos per rank per micro-batch
        "grad_accum_steps": 1,
        "trainable": "all",             # all | temporal | lora
        "lora": {"rank": 16, "alpha": None, "dropout": 0.0, "targets": ["attn"]},  # alpha null: = rank
        "optimizer": {"name": "adamw", "lr": 1.0e-5, "betas": [0.9, 0.999], "eps": 1.0e-8,
                      "weight_decay": 0.01},
        "lr_schedule": {"name": "cosine", "warmup_steps": 0, "warmup_factor": 0.0, "min_lr": 0.0},
        "clip_grad_norm": 1.0,          # null: no clipping
        "precision": "fp32",            # fp32 | fp16 | bf16 (UNet compute; weights stay float32)
        "loss_scale": {"enabled": None, "init": 65536.0, "factor": 2, "window": 1000},
        "recompute": False,             # recompute UNet blocks in the backward pass
        "ema": {"enabled": False, "decay": 0.9999},
        "save_every": 500,
        "log_every": 10,
        "sample_posterior": False,      # VAE posterior sample instead of its mode
        "cond_drop_prob": 0.0,          # drop a video's image conditioning (for guidance)
        "grad_bucket_mb": 64,
    },
    "data": {
        "csv": None,
        "root": "",
        "path_column": "path",
        "fps_column": "fps",
        "motion_bucket_column": "motion_bucket_id",
        "default_motion_bucket_id": 127,
        "num_frames": 14,
        "frame_stride": 1,
        "height": 576,
        "width": 1024,
        "cond_aug": {"p_mean": -3.0, "p_std": 0.5},
        "shuffle": True,
        "cache_latents": None,          # a folder: encode each clip once, reuse its latents
    },
}


def load_train_config(config, overrides: Sequence[str] = ()) -> DictConfig:
    """A training config: `base:` names an inference config (relative to this file) whose
    `model:` is the starting point; this file's `model:` is merged over it; `train:` and
    `data:` are filled from DEFAULTS. `overrides` are OmegaConf dotlist items (train.lr=...)."""
    cfg = load_config(config, what="training config")
    here = os.path.dirname(os.path.abspath(config)) if isinstance(config, (str, os.PathLike)) else os.getcwd()
    base = cfg.get("base")
    if base:
        base_path = base if os.path.isabs(base) else os.path.join(here, base)
        base_cfg = load_config(base_path, what="base config", require_model=True)
        cfg = OmegaConf.merge({"model": base_cfg.model}, cfg)
    if "model" not in cfg:
        raise ConfigError("training config has no model: set `base:` to an inference config or give `model:`")
    cfg = OmegaConf.merge(DEFAULTS, cfg)
    if overrides:
        cfg.merge_with_dotlist(list(overrides))
        check_targets(cfg, "the command-line overrides")
    t, d = cfg.train, cfg.data
    if t.trainable not in ("all", "temporal", "lora"):
        raise ConfigError(f"train.trainable must be 'all', 'temporal' or 'lora', got '{t.trainable}'")
    LoRASettings.from_config(OmegaConf.to_container(t.lora) if isinstance(t.lora, DictConfig) else t.lora)
    if t.precision not in policy.TRAIN_PRECISIONS:
        raise ConfigError(f"train.precision must be one of {policy.TRAIN_PRECISIONS}, got '{t.precision}'")
    for key in ("max_steps", "batch_size", "grad_accum_steps", "save_every", "log_every"):
        value = t[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"train.{key} must be an integer >= 1, got {value!r}")
    if not d.csv:
        raise ConfigError("data.csv is not set")
    if d.cache_latents and t.sample_posterior:
        raise ConfigError("data.cache_latents stores the posterior mode; it cannot be combined with "
                          "train.sample_posterior")
    return cfg
