"""svd_ms.training.config: a training config starts from an inference config (`base:`), is filled
from DEFAULTS, takes key=value overrides, and every bad setting is a one-line ConfigError."""
import pytest

from conftest import TINY_CONFIG
from svd_ms.errors import ConfigError
from svd_ms.training.config import DEFAULTS, load_train_config


def _config(tmp_path, **train):
    return {"base": TINY_CONFIG, "train": {"output_dir": str(tmp_path), **train}, "data": {"csv": "videos.csv"}}


def test_base_defaults_and_overrides(tmp_path):
    cfg = load_train_config(_config(tmp_path, max_steps=7), ["train.optimizer.lr=0.5", "data.num_frames=3"])
    assert "network_config" in cfg.model.params  # the model of the base config
    assert cfg.train.max_steps == 7 and cfg.train.optimizer.lr == 0.5 and cfg.data.num_frames == 3
    assert cfg.train.batch_size == DEFAULTS["train"]["batch_size"] and cfg.data.height == DEFAULTS["data"]["height"]
    assert cfg.train.optimizer.betas == DEFAULTS["train"]["optimizer"]["betas"]


@pytest.mark.parametrize("train,data,needle", [
    ({"trainable": "vae"}, {}, "train.trainable"),
    ({"precision": "fp8"}, {}, "train.precision"),
    ({"max_steps": 0}, {}, "train.max_steps"),
    ({"batch_size": True}, {}, "train.batch_size"),
    ({"sample_posterior": True}, {"cache_latents": "cache"}, "cache_latents"),
    ({}, {"csv": None}, "data.csv"),
])
def test_bad_settings_are_one_line(tmp_path, train, data, needle):
    cfg = _config(tmp_path, **train)
    cfg["data"].update(data)
    with pytest.raises(ConfigError, match=needle) as info:
        load_train_config(cfg)
    assert "\n" not in str(info.value)


def test_a_config_without_a_model_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="no model"):
        load_train_config({"train": {}, "data": {"csv": "videos.csv"}})
