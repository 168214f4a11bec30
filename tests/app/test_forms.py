"""svd_ms.app.forms: the page's form rules (numbers from the form, empty fields, the sampler and
cache options, messages escaped, CLI notes in the page's words)."""
import pytest

from svd_ms.app import forms
from svd_ms.errors import ParamError


def test_form_numbers():
    assert forms.as_int("fps", None) is None and forms.as_int("fps", "") is None
    assert forms.as_int("fps", 7.0) == 7 and forms.as_int("fps", 7) == 7
    with pytest.raises(ParamError, match="fps=7.5 must be a whole number") as err:
        forms.as_int("fps", 7.5)
    assert err.value.field == "fps"


def test_overrides_from_the_form():
    values = forms.form_overrides(4.0, 2, 100, 8, 0.02, 0, {"sampler": forms.CONFIG_DEFAULT, "guider": "triangle",
                                                            "min_guidance_scale": " ", "max_guidance_scale": "2.5"})
    assert values == {"num_frames": 4, "num_steps": 2, "motion_bucket_id": 100, "fps": 8, "noise_aug_strength": 0.02,
                      "decode_chunk_size": None, "sampler": None, "guider": "triangle", "min_guidance_scale": None,
                      "max_guidance_scale": 2.5}
    with pytest.raises(ParamError, match="fps is empty"):
        forms.form_overrides(4, 2, 100, None, 0.02, 0, {})
    with pytest.raises(ParamError, match="max_guidance_scale must be a number, got 'lots'"):
        forms.option_value("max_guidance_scale", "lots")


def test_messages_are_escaped_and_in_the_pages_words():
    assert "&lt;script&gt;" in forms.message_html("<script>") and "Error: " in forms.message_html("x")
    assert forms.message_html("") == "" and "Error" not in forms.message_html("note", error=False)
    assert 'value="2" max="5"' in forms.status_html("Running", 2, 5) and "<progress" not in forms.status_html("Ready.")
    assert forms.page_words("use --width=1024 --height=576") == "use width 1024 height 576"


def test_cache_controls_reach_the_request_overrides():
    extra = {"sampler": forms.CONFIG_DEFAULT, "cache": "deepcache", "cache_interval": 2.0, "cache_branch": 1}
    values = forms.form_overrides(4, 2, 100, 8, 0.02, 0, extra)
    assert (values["cache"], values["cache_interval"], values["cache_branch"]) == ("deepcache", 2, 1)
    assert isinstance(values["cache_interval"], int) and values["sampler"] is None
    # an emptied interval or branch keeps SVDParams' default instead of sending None
    emptied = forms.form_overrides(4, 2, 100, 8, 0.02, 0, {"cache": "none", "cache_interval": None, "cache_branch": ""})
    assert emptied["cache"] == "none" and "cache_interval" not in emptied and "cache_branch" not in emptied
    with pytest.raises(ParamError, match="cache_interval=2.5 must be a whole number"):
        forms.form_overrides(4, 2, 100, 8, 0.02, 0, {"cache_interval": 2.5})
