"""svd_ms.pipelines.engine: the engine built from model settings -- random or loaded weights,
precision, attention, the size multiple, the engine's own sampler sized to the default clip."""
import numpy as np

from conftest import TINY_CONFIG, TINY_WEIGHTS
from svd_ms.params import SVDParams
from svd_ms.pipelines.engine import build_engine
from svd_ms.util import load_config


def _build(**settings):
    params = SVDParams(config=TINY_CONFIG, **settings)
    return build_engine(load_config(TINY_CONFIG, require_model=True), params.model_settings, 3)


def test_weights_random_or_loaded_and_the_size_multiple():
    engine, _, info, multiple = _build()
    assert info == {"random": True} and multiple == 64
    channel_mult = load_config(TINY_CONFIG).model.params.network_config.params.channel_mult
    assert multiple == 8 * 2 ** (len(channel_mult) - 1)
    loaded, _, info, _ = _build(checkpoint=TINY_WEIGHTS)
    assert "random" not in info
    name, random_value = next((n, p.asnumpy()) for n, p in engine.parameters_and_names() if p.ndim == 4)
    assert not np.array_equal(dict(loaded.parameters_and_names())[name].asnumpy(), random_value)


def test_model_settings_reach_the_network_and_the_sampler():
    engine, _, _, _ = _build(attention="math", ff_chunk_size=16)
    assert engine.sampler.guider.scale.asnumpy().size == 3  # sized to the default clip given
    cfg = load_config(TINY_CONFIG, require_model=True)
    params = SVDParams(config=TINY_CONFIG, attention="math", ff_chunk_size=16)
    build_engine(cfg, params.model_settings, 3)
    assert cfg.model.params.network_config.params.ff_chunk_size == 16
    assert cfg.model.params.network_config.params.attention == "math"
