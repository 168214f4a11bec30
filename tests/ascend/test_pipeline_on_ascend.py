"""The whole pipeline as it runs on an Ascend NPU, on this CPU host: the policy forced to Ascend,
every Ascend-only operation replaced by its contract double (kernel_contracts.py), graph mode,
compared with the upstream fixtures within the float16 bounds of tests/test_precision.py.

Graph compiles dominate the time, so the module builds each pipeline once and frees them at its end."""
import gc
import json
import os

import numpy as np
import pytest

from conftest import REFERENCE, assert_close
from engine_fixtures import graph_mode, tiny_pipeline
from ascend import kernel_contracts

# tests/test_precision.py's bounds for a float16 run against the float32 upstream video.
FP16_VIDEO_BOUNDS = dict(max_abs=0.1, mean_abs=1e-2)


@pytest.fixture(scope="module")
def ascend():
    """The Ascend policy and the doubles in place, graph mode."""
    with pytest.MonkeyPatch.context() as mp:
        kernel_contracts.install(mp)
        with graph_mode():
            yield
    gc.collect()


def _attention_choices(engine):
    """{implementation: count} over every attention layer of a built engine."""
    choices = {}
    for _, cell in engine.cells_and_names():
        if hasattr(cell, "implementation") and cell.implementation in ("flash", "math"):
            choices[cell.implementation] = choices.get(cell.implementation, 0) + 1
    return choices


@pytest.fixture(scope="module")
def pipelines(ascend):
    built = {}

    def get(amp_level):
        if amp_level not in built:
            built[amp_level] = tiny_pipeline(amp_level=amp_level)
        return built[amp_level]
    yield get
    built.clear()
    gc.collect()


@pytest.mark.parametrize("amp_level", ["O0", "O2"])
def test_image_to_video_on_ascend(pipelines, reference, amp_level):
    """Graph mode runs Python side effects only while compiling, so the doubles' use is shown by
    the layers' choices here and by tests/modules/test_attention.py's graph-mode refusal."""
    r = reference
    pipe = pipelines(amp_level)
    assert set(_attention_choices(pipe.engine)) == {"flash"}
    result = pipe.generate(r["image"], latent_noise=r["randn"], cond_noise=r["cond_noise"])
    assert np.isfinite(result.video).all()
    assert_close(f"ascend_{amp_level}_video", result.video, r["video"], **FP16_VIDEO_BOUNDS)


@pytest.mark.parametrize("amp_level", ["O2"])  # O0's Ascend code (fp16 q/k/v for the fused kernel) runs above
def test_sv3d_on_ascend(ascend, amp_level):
    """SV3D_u through the doubles (its camera-free variant: one conditioning path less)."""
    from svd_ms.pipeline import SVDInferPipeline
    r = dict(np.load(os.path.join(REFERENCE, "tiny_sv3d_u.reference.npz")))
    settings = json.load(open(os.path.join(REFERENCE, "tiny_sv3d_u.json")))
    pipe = SVDInferPipeline(os.path.join(REFERENCE, "tiny_sv3d_u.sgm.yaml"),
                            os.path.join(REFERENCE, "tiny_sv3d_u.safetensors"), amp_level=amp_level,
                            decode_chunk_size=settings["decoding_t"])
    assert set(_attention_choices(pipe.engine)) == {"flash"}
    out = pipe.generate(r["image"], latent_noise=r["randn"], cond_noise=r["cond_noise"])
    assert_close(f"ascend_sv3d_u_{amp_level}_video", out["video"], r["video"], **FP16_VIDEO_BOUNDS)


@pytest.mark.parametrize("amp_level", ["O0", "O2"])
def test_video_to_video_on_ascend(pipelines, reference, amp_level):
    """Video-to-video at strength 1 (every step, from the upstream noise) is image-to-video: the
    VAE encoder's path through the doubles, against the upstream video. The input clip is the
    upstream video itself; at strength 1 it enters only as latents/sigma_max (1/700)."""
    r = reference
    pipe = pipelines(amp_level)
    source = (r["video"] * 2.0 - 1.0).astype(np.float32)
    out = pipe.generate(r["image"], video=source, strength=1.0, latent_noise=r["randn"], cond_noise=r["cond_noise"])
    assert_close(f"ascend_v2v_strength1_{amp_level}_video", out.video, r["video"], **FP16_VIDEO_BOUNDS)
