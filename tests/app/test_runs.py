"""svd_ms.app.runs: progress over clips and skipped video-to-video steps, thumbnails, and the
settings a web run records for each kind (the rest runs through the service, tests/app/test_service.py)."""
import threading
from types import SimpleNamespace

import numpy as np

from svd_ms.app.runs import PREVIEW_EVERY, Progress, live_preview, output_settings, thumbnail


def _job():
    return SimpleNamespace(progress=SimpleNamespace(done=0, total=0, stage="", detail=""), num_clips=2,
                           cancel_requested=False, preview_fn=None, _cancel=threading.Event())


def test_progress_counts_every_clip_and_skipped_steps():
    job = _job()
    progress = Progress(job, steps=4, chunks=2, clips=2)
    assert job.progress.total == 12
    assert progress(SimpleNamespace(stage="sampling", index=0, total=4, clip=0)) is True
    assert job.progress.done == 1 and job.progress.detail == "clip 1/2, sampling step 1/4"
    progress(SimpleNamespace(stage="decoding", index=1, total=2, clip=0))
    assert job.progress.done == 6
    progress(SimpleNamespace(stage="sampling", index=0, total=2, clip=1))  # 2 of 4 steps skipped (strength)
    assert job.progress.done == 6 + 2 + 1
    job.cancel_requested = True
    assert progress(SimpleNamespace(stage="sampling", index=1, total=2, clip=1)) is False


def test_progress_hands_the_steps_to_the_live_preview():
    job = _job()
    seen, shown = [], []
    job.preview_fn = lambda info: seen.append(info.index) or live_preview(info)
    job.set_preview = shown.append
    progress = Progress(job, steps=5, chunks=1, clips=1)
    rng = np.random.default_rng(0)
    for i in range(5):
        progress(SimpleNamespace(stage="sampling", index=i, total=5, clip=0,
                                 denoised=rng.standard_normal((3, 4, 8, 16)).astype(np.float32)))
    progress(SimpleNamespace(stage="decoding", index=0, total=1, clip=0))
    assert seen == [i for i in range(5) if i % PREVIEW_EVERY == 0 or i == 4]
    assert len(shown) == len(seen) and shown[0].dtype == np.uint8 and shown[0].ndim == 3
    assert not np.array_equal(shown[0], shown[-1])  # each step's estimate, not one picture
    assert live_preview(SimpleNamespace(denoised=None)) is None


def test_thumbnail_and_output_settings():
    frame = np.arange(576 * 1024 * 3, dtype=np.uint32).reshape(576, 1024, 3).astype(np.uint8)
    small = thumbnail(frame)
    assert max(small.shape[:2]) <= 160 and np.array_equal(small[0, 0], frame[0, 0])
    orbit = SimpleNamespace(kind="orbit", height=64, width=64, camera={"elevations_deg": [1.0], "azimuths_deg": None},
                            keep_background=True)
    assert output_settings(orbit) == {"height": 64, "width": 64, "output_format": "mp4", "elevations_deg": [1.0],
                                      "azimuths_deg": None, "keep_background": True, "image_frame_ratio": None}
    plain = SimpleNamespace(kind="image_to_video", height=None, width=128)
    assert output_settings(plain) == {"height": None, "width": 128, "output_format": "mp4"}
