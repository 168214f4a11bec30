"""svd_ms.app.ui: the page's own rules (numbers from the form, empty fields, the sampler and cache options,
messages escaped, CLI notes in the page's words) and the page built around a service; seeds are
the one seed rule's (svd_ms.seeds)."""
from types import SimpleNamespace

import pytest

from svd_ms.app import ui
from svd_ms.app.uploads import UploadLimits
from svd_ms.errors import ParamError
from svd_ms.seeds import SEED_MOD


def test_form_numbers():
    assert ui._as_int("fps", None) is None and ui._as_int("fps", "") is None
    assert ui._as_int("fps", 7.0) == 7 and ui._as_int("fps", 7) == 7
    with pytest.raises(ParamError, match="fps=7.5 must be a whole number") as err:
        ui._as_int("fps", 7.5)
    assert err.value.field == "fps"


def test_overrides_from_the_form():
    values = ui._overrides(4.0, 2, 100, 8, 0.02, 0, {"sampler": ui.CONFIG_DEFAULT, "guider": "triangle",
                                                      "min_guidance_scale": " ", "max_guidance_scale": "2.5"})
    assert values == {"num_frames": 4, "num_steps": 2, "motion_bucket_id": 100, "fps": 8, "noise_aug_strength": 0.02,
                      "decode_chunk_size": None, "sampler": None, "guider": "triangle", "min_guidance_scale": None,
                      "max_guidance_scale": 2.5}
    with pytest.raises(ParamError, match="fps is empty"):
        ui._overrides(4, 2, 100, None, 0.02, 0, {})
    with pytest.raises(ParamError, match="max_guidance_scale must be a number, got 'lots'"):
        ui._option("max_guidance_scale", "lots")


def test_messages_are_escaped_and_in_the_pages_words():
    assert "&lt;script&gt;" in ui.message_html("<script>") and "Error: " in ui.message_html("x")
    assert ui.message_html("") == "" and "Error" not in ui.message_html("note", error=False)
    assert 'value="2" max="5"' in ui.status_html("Running", 2, 5) and "<progress" not in ui.status_html("Ready.")
    assert ui._page_words("use --width=1024 --height=576") == "use width 1024 height 576"


def test_page_builds_around_a_service():
    gr = pytest.importorskip("gradio")
    info = ui.PageInfo(title="t", model_line="m", untrained=True, num_frames=3, num_steps=2, fps=7,
                       motion_bucket_id=127, noise_aug_strength=0.02, decode_chunk_size=None, example_image=None,
                       limits=UploadLimits())
    page = ui.build_page(SimpleNamespace(max_queue=2), info)
    assert isinstance(page, gr.Blocks)
    seed = next(c for c in page.blocks.values() if getattr(c, "elem_id", None) == "seed")
    assert seed.info == f"0 to {SEED_MOD - 1}"


def test_cache_controls_reach_the_request_overrides():
    extra = {"sampler": ui.CONFIG_DEFAULT, "cache": "deepcache", "cache_interval": 2.0, "cache_branch": 1}
    values = ui._overrides(4, 2, 100, 8, 0.02, 0, extra)
    assert (values["cache"], values["cache_interval"], values["cache_branch"]) == ("deepcache", 2, 1)
    assert isinstance(values["cache_interval"], int) and values["sampler"] is None
    # an emptied interval or branch keeps SVDParams' default instead of sending None
    emptied = ui._overrides(4, 2, 100, 8, 0.02, 0, {"cache": "none", "cache_interval": None, "cache_branch": ""})
    assert emptied["cache"] == "none" and "cache_interval" not in emptied and "cache_branch" not in emptied
    with pytest.raises(ParamError, match="cache_interval=2.5 must be a whole number"):
        ui._overrides(4, 2, 100, 8, 0.02, 0, {"cache_interval": 2.5})


def test_page_has_the_cache_controls_folded_away():
    gr = pytest.importorskip("gradio")
    info = ui.PageInfo(title="t", model_line="m", untrained=True, num_frames=3, num_steps=2, fps=7,
                       motion_bucket_id=127, noise_aug_strength=0.02, decode_chunk_size=None, example_image=None,
                       limits=UploadLimits())
    page = ui.build_page(SimpleNamespace(max_queue=2), info)
    by_id = {getattr(c, "elem_id", None): c for c in page.blocks.values()}
    assert isinstance(by_id["cache-settings"], gr.Accordion) and by_id["cache-settings"].open is False
    assert by_id["cache"].value == "none" and [v for _, v in by_id["cache"].choices] == ["none", "deepcache"]
    assert (by_id["cache_interval"].value, by_id["cache_branch"].value) == (3, 0)
    # the generate click hands every control to run(), so their values reach the overrides
    generate = next(d for d in page.fns.values() if d.name == "run")
    assert {by_id["cache"]._id, by_id["cache_interval"]._id, by_id["cache_branch"]._id} <= {c._id for c in generate.inputs}
