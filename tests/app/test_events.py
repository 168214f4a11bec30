"""svd_ms.app.events: each tab's form values become the service request the command line would
run (kind, overrides, camera, LoRA picks), and "use these settings again" gives the form back the
values of a finished result."""
import os
from types import SimpleNamespace

import pytest

from conftest import REFERENCE, ROOT
from svd_ms.app.capabilities import Capabilities
from svd_ms.app.events import USE_AGAIN_KEYS, PageEvents, use_again_values
from svd_ms.app.uploads import UploadLimits
from svd_ms.errors import SVDError
from svd_ms.params import SVDParams

DEMO_IMAGE = os.path.join(ROOT, "assets", "demo_landscape.png")
ALL = Capabilities(image_to_video=True, orbit=True, camera=True, video_to_video=True, chained=True,
                   fast_preset=False, lora=True)


def _events():
    info = SimpleNamespace(limits=UploadLimits(), example_image=DEMO_IMAGE, capabilities=ALL,
                           lora_names=("a.safetensors",))
    return PageEvents(SimpleNamespace(), info, {})


def _form(**values):
    form = dict(frames=3, steps=2, motion=127, fps=7, noise=0.02, chunk=0, seed=1, lora=[["a.safetensors", 0.5]],
                extra={"sampler": "(the config's)"})
    form.update(values)
    return form


def test_image_tab_request():
    req, warnings, shown = _events().image_request(_form(upload=None, use_example=True, height=64, width=128,
                                                         num_clips=3))
    assert req.kind == "image_to_video" and req.image.shape == (64, 128, 3) and (req.height, req.width) == (64, 128)
    assert req.overrides["num_clips"] == 3 and req.overrides["num_steps"] == 2 and req.lora == [("a.safetensors", 0.5)]
    assert shown["preview"].size == (128, 64)
    with pytest.raises(SVDError, match="no image"):
        _events().image_request(_form(upload=None, use_example=False, height=None, width=None, num_clips=1))


def test_orbit_and_video_tab_requests(tmp_path):
    table = [[5.0, 120.0], [10.0, 240.0], [15.0, 0.0]]
    req, _, shown = _events().orbit_request(_form(orbit_upload=f"{REFERENCE}/tiny_sv3d_p.input.png",
                                                  keep_background=True, view_size=64, camera=table))
    assert req.kind == "orbit" and req.image.shape == (64, 64, 3) and shown["cutout"] is req.image
    assert req.camera == {"elevations_deg": [5.0, 10.0, 15.0], "azimuths_deg": [120.0, 240.0, 0.0]}
    import imageio
    import numpy as np
    clip = tmp_path / "clip.mp4"
    imageio.mimwrite(clip, [np.full((64, 128, 3), 9 * i, np.uint8) for i in range(4)], fps=4)
    req, _, _ = _events().video_request(_form(video_upload=str(clip), strength=0.6))
    assert (req.kind, req.video, req.image, req.overrides["strength"]) == ("video_to_video", str(clip), None, 0.6)
    assert req.video_info["path"] == "clip.mp4" and req.video_info["width"] == 128


def test_use_again_gives_the_form_the_results_values():
    from fake_pipeline import FakePipeline

    pipe = FakePipeline(SVDParams(config=os.path.join(ROOT, "configs", "demo", "tiny_random.yaml")))
    request = SimpleNamespace(kind="image_to_video", overrides={"num_steps": 5, "fps": 9, "sampler": "heun",
                                                                "num_clips": 2}, seed=77, height=64, width=128,
                              camera=None, keep_background=False, lora=[("a.safetensors", 0.5)])
    info = SimpleNamespace(lora_names=("a.safetensors", "b.safetensors"), capabilities=ALL)
    ui = {"extra": {"sampler": None, "guider": None, "max_guidance_scale": None}}
    values = dict(zip(list(USE_AGAIN_KEYS) + list(ui["extra"]),
                      use_again_values(pipe, info, ui, SimpleNamespace(request=request))))
    assert (values["steps"], values["fps"], values["seed"], values["num_clips"]) == (5, 9, 77, 2)
    assert (values["width"], values["height"], values["frames"]) == (128, 64, 3)
    assert values["lora"] == [["a.safetensors", 0.5], ["b.safetensors", 0.0]]
    assert (values["sampler"], values["guider"], values["max_guidance_scale"]) == ("heun", "(the config's)", "")


def test_cutout_follows_the_file_and_an_empty_recut_leaves_it():
    """The file's change draws (or, cleared, empties) the cut-out; ticking "keep background" with no
    file answers nothing, so a late reply cannot wipe a cut-out drawn meanwhile (CI's flaky orbit run)."""
    import gradio as gr

    events, picture = _events(), f"{REFERENCE}/tiny_sv3d_p.input.png"
    pixels, message = events.show_cutout(picture, True, 64)
    assert pixels.shape == (64, 64, 3) and "tiny_sv3d_p.input.png" in message
    assert events.show_cutout(None, True, 64) == (None, "")
    assert all(isinstance(v, type(gr.skip())) for v in events.recut(None, True, 64))
    assert events.recut(picture, True, 64)[0].shape == (64, 64, 3)
