"""svd_ms.pipelines.components: the shared parts -- the conditioning vs upstream, per-call
settings, input preparation for this model, size and motion refusals, the VAE round trip."""
import numpy as np
import pytest

from conftest import TINY_CONFIG, TINY_WEIGHTS, assert_close
from engine_fixtures import REL
from svd_ms.errors import ConfigError, InputError, ParamError
from svd_ms.params import SVDParams
from svd_ms.pipelines.components import PipelineComponents, check_output_type, single_clip_params


@pytest.fixture(scope="module")
def parts():
    return PipelineComponents(SVDParams(config=TINY_CONFIG, checkpoint=TINY_WEIGHTS, num_frames=5, num_steps=4,
                                        decode_chunk_size=3))


def test_conditioning_matches_upstream(parts, reference):
    c, uc = parts.conditioning(reference["image"], reference["cond_noise"])
    for key in ("crossattn", "concat", "vector"):
        assert_close(f"c_{key}", c[key].asnumpy(), reference[f"c_{key}"], rel=REL)
        assert_close(f"uc_{key}", uc[key].asnumpy(), reference[f"uc_{key}"], rel=REL,
                     max_abs=1e-6 if key != "vector" else None)


def test_per_call_settings_keep_the_model_and_refuse_model_changes(parts):
    params = parts.call_params(num_steps=2, fps=9)
    assert (params.num_steps, params.fps) == (2, 9) and params.model_settings is parts.params.model_settings
    same = parts.params.amp_level
    assert parts.call_params(amp_level=same).amp_level == same  # the same value is not a change
    with pytest.raises(ParamError, match="amp_level cannot change per call"):
        parts.call_params(amp_level="O2")
    assert parts.resolve(params)["num_steps"] == 2 and parts.resolve()["num_steps"] == 4


def test_one_clip_runs_refuse_chains_and_strength(parts):
    with pytest.raises(ParamError, match="num_clips=2"):
        single_clip_params(parts, {"num_clips": 2}, "image-to-video")
    with pytest.raises(ParamError, match="video-to-video only"):
        single_clip_params(parts, {"strength": 0.5}, "image-to-video")
    with pytest.raises(InputError, match="output_type"):
        check_output_type("frames")


def test_input_is_prepared_for_this_model(parts, tmp_path):
    from PIL import Image

    path = tmp_path / "p.png"
    Image.new("RGB", (130, 70), (9, 80, 200)).save(path)
    prepared = parts.prepare_input(str(path))
    assert prepared.array.shape == (1, 3, 64, 128) and prepared.info["size"] == [128, 64]
    with pytest.raises(InputError, match="prepare SV3D inputs"):
        parts.prepare_input(str(path), keep_background=True)  # not an orbit model
    parts.check_image_size(prepared.array)
    with pytest.raises(InputError, match="multiples of 64, got 96x64"):
        parts.check_image_size(np.zeros((1, 3, 96, 64), np.float32))


def test_motion_conditioning_is_required_where_it_is_kept(parts, monkeypatch):
    parts.require_motion_conditioning("chained clips")
    keys = list(parts.engine.conditioner.input_keys)
    monkeypatch.setattr(type(parts.engine.conditioner), "input_keys",
                        property(lambda self: [k for k in keys if k != "motion_bucket_id"]))
    with pytest.raises(ConfigError, match="chained clips .* not conditioned on motion_bucket_id"):
        parts.require_motion_conditioning("chained clips")


def test_encode_then_decode_keeps_shapes_and_reports_chunks(parts, reference):
    frames = np.repeat(reference["image"][:, :, :64, :64], 3, axis=0)
    z = parts.encode_video(frames, chunk_size=2)
    assert tuple(z.shape) == (3, 4, 8, 8)
    seen = []
    decoded, video = parts.decode_latents(z, 2, callback=lambda info: seen.append((info.stage, info.index, info.total)))
    assert decoded.shape == video.shape == (3, 3, 64, 64) and video.min() >= 0 and video.max() <= 1
    assert seen == [("decoding", 0, 2), ("decoding", 1, 2)]
