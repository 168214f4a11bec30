"""Building the engine of a pipeline from its model settings: the sgm model from the config,
precision, weights (checkpoint or random), a UNet override and LoRA adapters merged once."""
from typing import Any, Dict, Tuple

from ..checkpoint import load_checkpoint_into
from ..errors import ConfigError
from ..precision import apply_precision
from ..util import instantiate_from_config


def build_engine(cfg, model_settings, default_num_frames: int) -> Tuple[Any, Any, Dict[str, Any], int]:
    """(engine, precision decisions, weights info, size multiple) for a loaded config `cfg` and
    checked `ModelSettings`. The size multiple is what image sides must be divisible by."""
    model_params = cfg.model.params
    network_params = model_params.network_config.params
    network_params.attention = model_settings.attention
    network_params.ff_chunk_size = model_settings.ff_chunk_size
    guider = model_params.sampler_config.params.get("guider_config", None)
    if guider is not None and "max_scale" in (guider.get("params", None) or {}):
        # The engine's own sampler is built for the default clip length, as upstream's script does.
        guider.params.num_frames = default_num_frames
    try:
        engine = instantiate_from_config(cfg.model)
    except ConfigError as exc:
        described_by = model_settings.config if isinstance(model_settings.config, str) else None
        if described_by is None and model_settings.checkpoint is not None:
            described_by = f"the config derived from {model_settings.checkpoint}"
        if described_by is None:
            raise
        raise ConfigError(f"{described_by}: {exc}") from exc
    engine.set_train(False)
    # Precision first: each tensor is then written straight into its parameter's dtype, so an O2
    # model never holds a float32 copy of its float16 weights.
    precision_decisions = apply_precision(engine, model_settings.amp_level)
    if model_settings.checkpoint is None:
        from ..weights import randomize
        randomize(engine, seed=0)
        weights_info: Dict[str, Any] = {"random": True}
    else:
        weights_info = load_checkpoint_into(engine, model_settings.checkpoint)
    if model_settings.unet_weights:
        from ..unet_weights import load_unet_weights
        weights_info = dict(weights_info, unet_weights=load_unet_weights(engine, model_settings.unet_weights))
    if model_settings.lora:
        from ..lora import merge_lora
        weights_info = dict(weights_info, lora=merge_lora(engine, model_settings.lora))
    # The VAE halves the size 3 times, each UNet level but the last once more.
    size_multiple = 8 * 2 ** (len(network_params.get("channel_mult", [1, 2, 4, 4])) - 1)
    return engine, precision_decisions, weights_info, size_multiple
