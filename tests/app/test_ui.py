"""svd_ms.app.ui: the page built around a service shows one tab per kind of run the model
supports and hides the others, folds the rarely changed settings away, gives every event a
stable api_name, and seeds follow the one seed rule (svd_ms.seeds)."""
from types import SimpleNamespace

import pytest

from svd_ms.app import ui
from svd_ms.app.capabilities import Capabilities
from svd_ms.app.uploads import UploadLimits
from svd_ms.seeds import SEED_MOD

ORBIT_P = Capabilities(image_to_video=False, orbit=True, camera=True, video_to_video=False, chained=False,
                       fast_preset=False, lora=False)


def _info(**changes):
    values = dict(title="t", model_line="m", untrained=True, num_frames=3, num_steps=2, fps=7, motion_bucket_id=127,
                  noise_aug_strength=0.02, decode_chunk_size=None, example_image=None, limits=UploadLimits())
    values.update(changes)
    return ui.PageInfo(**values)


def _page(info):
    gr = pytest.importorskip("gradio")
    page = ui.build_page(SimpleNamespace(max_queue=2), info)
    assert isinstance(page, gr.Blocks)
    return page, {getattr(c, "elem_id", None): c for c in page.blocks.values()}


def test_an_svd_page_has_its_tabs_and_hides_the_orbit():
    gr = pytest.importorskip("gradio")
    caps = Capabilities(image_to_video=True, orbit=False, camera=False, video_to_video=True, chained=True,
                        fast_preset=True, lora=True)
    page, by_id = _page(_info(capabilities=caps, sampler="lcm", lora_names=("a.safetensors", "b.safetensors")))
    assert by_id["seed"].info == f"0 to {SEED_MOD - 1}"
    assert (by_id["tab-image"].visible, by_id["tab-video"].visible, by_id["tab-orbit"].visible) == (True, True, False)
    assert by_id["num-clips"].visible and by_id["clips"].visible and by_id["lora-settings"].visible
    assert [v for _, v in by_id["preset"].choices] == ["quality", "fast"] and by_id["sampler"].value == "lcm"
    assert by_id["lora"].value["data"] == [["a.safetensors", 0.0], ["b.safetensors", 0.0]]
    for folded in ("more-settings", "cache-settings"):
        assert isinstance(by_id[folded], gr.Accordion) and by_id[folded].open is False
    names = {d.api_name for d in page.fns.values() if d.api_name}
    assert {"generate_image_to_video", "generate_orbit", "generate_video_to_video", "cancel_mine", "history",
            "random_seed"} <= names
    # the generate click hands every shared control to the handler, so their values reach the request
    generate = next(d for d in page.fns.values() if d.api_name == "generate_image_to_video")
    assert {by_id[k]._id for k in ("cache", "cache_interval", "frames", "lora", "num-clips")} <= \
        {c._id for c in generate.inputs}


def test_an_orbit_page_shows_only_the_orbit():
    page, by_id = _page(_info(capabilities=ORBIT_P, num_frames=5))
    assert (by_id["tab-image"].visible, by_id["tab-video"].visible, by_id["tab-orbit"].visible) == (False, False, True)
    assert not by_id["num-clips"].visible and not by_id["lora-settings"].visible
    assert [v for _, v in by_id["preset"].choices] == ["quality"]  # no consistency sampler served
    assert len(by_id["camera"].value["data"]) == 5 and by_id["camera-plot"].value is not None
