"""svd_ms.params.SVDParams: the one place where generation settings are checked."""
import pytest

from conftest import TINY_CONFIG
from svd_ms.errors import ParamError
from svd_ms.params import SVDParams


@pytest.mark.parametrize("field,value", [("num_frames", 0), ("decode_chunk_size", 0), ("num_steps", 0),
                                         ("fps", 0), ("fps", 61), ("motion_bucket_id", -1),
                                         ("motion_bucket_id", 256), ("noise_aug_strength", -0.1),
                                         ("ff_chunk_size", 0), ("amp_level", "O1"), ("attention", "fast"),
                                         ("num_frames", 2.5), ("fps", True)])
def test_out_of_range_values_name_their_field(field, value):
    with pytest.raises(ParamError) as info:
        SVDParams(config=TINY_CONFIG, **{field: value})
    assert info.value.field == field and str(info.value).startswith(field)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("level", ["bf16", "bfloat16"])
def test_bfloat16_is_refused_with_its_reason(level):
    """Not offered (svd_ms.policy.bf16_inference_refusal: MindSpore 2.10 documents silu for float16
    and float32 only); the one line says so instead of listing the levels."""
    with pytest.raises(ParamError) as info:
        SVDParams(config=TINY_CONFIG, amp_level=level)
    assert info.value.field == "amp_level" and "silu" in str(info.value) and "\n" not in str(info.value)


def test_missing_files_are_refused(tmp_path):
    with pytest.raises(ParamError, match="does not exist") as info:
        SVDParams(config=str(tmp_path / "none.yaml"))
    assert info.value.field == "config"
    with pytest.raises(ParamError, match="gone.ckpt") as info:
        SVDParams(config=TINY_CONFIG, checkpoint=str(tmp_path / "gone.ckpt"))
    assert info.value.field == "checkpoint"


def test_random_checkpoint_spellings_mean_none():
    for spelling in ("random", "None", "", "null"):
        assert SVDParams(config=TINY_CONFIG, checkpoint=spelling).checkpoint is None


def test_replace_revalidates_and_rejects_unknown_fields():
    base = SVDParams(config=TINY_CONFIG)
    assert base.replace(fps=9).fps == 9 and base.fps == 7
    with pytest.raises(ParamError):
        base.replace(fps=0)
    with pytest.raises(ParamError, match="unknown"):
        base.replace(frames=3)


def test_absurd_step_count_is_refused_before_anything_is_built():
    with pytest.raises(ParamError, match="num_steps"):
        SVDParams(config=TINY_CONFIG, num_steps=1_000_000_000)


def test_to_dict_writes_dict_fields_as_their_values():
    """Dict fields (sampler_params) were written as the string "<dict>", so a rerun with other
    sampler parameters looked like the same settings; every value must come out as it is."""
    import json

    params = SVDParams(config=TINY_CONFIG, sampler="euler", sampler_params={"s_churn": 1.0, "s_noise": 1.003})
    record = params.to_dict()
    assert record["sampler_params"] == {"s_churn": 1.0, "s_noise": 1.003}
    assert "<dict>" not in json.dumps(record)
    assert json.loads(json.dumps(record)) == record
    assert SVDParams(**record) == params
    other = params.replace(sampler_params={"s_churn": 2.0, "s_noise": 1.003})
    assert other.to_dict() != record


def test_fields_split_into_model_and_sampling_views():
    import dataclasses

    from svd_ms.params import MODEL_FIELDS, SAMPLING_FIELDS, ModelSettings, SamplingSettings

    names = [f.name for f in dataclasses.fields(SVDParams)]
    assert sorted(MODEL_FIELDS + SAMPLING_FIELDS) == sorted(names)
    assert [f.name for f in dataclasses.fields(ModelSettings)] == list(MODEL_FIELDS)
    assert [f.name for f in dataclasses.fields(SamplingSettings)] == list(SAMPLING_FIELDS)
    params = SVDParams(config=TINY_CONFIG, checkpoint="random", num_steps=3)
    assert params.model_settings.checkpoint is None and params.sampling_settings.num_steps == 3


def test_per_call_changes_do_not_check_files_again(monkeypatch):
    """A sampling-only change keeps the checked model settings: the checkpoint is not sniffed and
    the config not looked up again; a model change checks them."""
    from conftest import TINY_WEIGHTS
    from svd_ms import checkpoint

    params = SVDParams(config=TINY_CONFIG, checkpoint=TINY_WEIGHTS)
    sniffed = []
    real = checkpoint.engine_checkpoint_format
    monkeypatch.setattr(checkpoint, "engine_checkpoint_format", lambda path: sniffed.append(path) or real(path))
    changed = params.replace(num_steps=2, fps=9, sampler_params={"s_churn": 0.5}, sampler="euler")
    assert sniffed == [] and changed.model_settings is params.model_settings
    assert (changed.num_steps, changed.fps, changed.sampler_params) == (2, 9, {"s_churn": 0.5})
    with pytest.raises(ParamError, match="num_steps"):
        params.replace(num_steps=0)
    params.replace(amp_level="O2")
    assert sniffed == [TINY_WEIGHTS]
