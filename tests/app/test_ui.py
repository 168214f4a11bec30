"""svd_ms.app.ui: the page's own rules (numbers from the form, empty fields, the sampler options,
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
