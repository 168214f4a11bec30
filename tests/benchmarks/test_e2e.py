"""benchmarks.e2e's stage timing of svd-ms, run on the tiny model: every stage the benchmark
reports is timed once per video (a renamed method once left the sampling and decoding columns of a
long benchmark run empty)."""
import numpy as np

from conftest import TINY_CONFIG, TINY_WEIGHTS


def test_every_stage_of_a_video_is_timed(monkeypatch):
    from benchmarks import e2e
    from svd_ms.pipeline import SVDInferPipeline
    from svd_ms.pipelines import clip as clip_module

    monkeypatch.setattr(clip_module, "sample_latents", clip_module.sample_latents)  # undone after the test
    pipe = SVDInferPipeline(TINY_CONFIG, TINY_WEIGHTS, num_frames=3, num_steps=2, decode_chunk_size=3)
    meter = e2e.Meter()
    e2e.time_ours_stages(meter, pipe)
    image = np.zeros((1, 3, 64, 64), np.float32)
    pipe.generate(image, seed=0)
    stages = meter.result()["stages"]
    assert {name: s["calls"] for name, s in stages.items()} == {
        "image_embedding": 1, "vae_encoding": 1, "sampling": 1, "decoding": 1}
    assert all(s["s"] > 0 and s["peak_gb"] > 0 for s in stages.values())
