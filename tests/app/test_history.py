"""svd_ms.app.history: thumbnails and captions of finished results, the picked one, and its
settings as page values."""
from types import SimpleNamespace

import numpy as np

from svd_ms.app.history import caption, gallery_items, pick, settings_of


def _job(seed, kind="image_to_video", done=True, clips=1):
    record = {"seed": seed, "frames": 3, "width": 128, "height": 64, "clips": clips, "pipeline": {"num_steps": 2},
              "resolved": {"num_steps": 2}} if done else None
    request = SimpleNamespace(kind=kind, overrides={"num_steps": 2, "fps": 8}, seed=seed, height=None, width=128,
                              camera=None, keep_background=False, lora=[("a.safetensors", 0.5)])
    return SimpleNamespace(record=record, request=request, thumbnail=np.zeros((4, 4, 3), np.uint8) if done else None)


def test_gallery_and_pick_skip_unfinished_results():
    jobs = [_job(1), _job(2, done=False), _job(3, "orbit", clips=1), _job(4, clips=2)]
    items = gallery_items(jobs)
    assert [c for _, c in items] == ["image to video: seed 1, 3 frames 128x64, 2 steps",
                                     "orbit: seed 3, 3 frames 128x64, 2 steps",
                                     "image to video: seed 4, 3 frames 128x64, 2 steps, 2 clips"]
    assert pick(jobs, 1) is jobs[2] and pick(jobs, 3) is None and pick(jobs, None) is None
    assert caption(jobs[0]).startswith("image to video")


def test_settings_of_a_result():
    s = settings_of(_job(7))
    assert s == {"num_steps": 2, "fps": 8, "seed": 7, "height": None, "width": 128, "kind": "image_to_video",
                 "camera": None, "keep_background": False, "lora": [("a.safetensors", 0.5)]}
