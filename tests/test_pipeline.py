"""The whole image-to-video run vs upstream: guided denoiser step, sampled latents, decoded
frames and the video, in graph mode (the sampling loop reuses one compiled denoiser step)."""
import numpy as np
import pytest
from mindspore import Tensor

from conftest import assert_close
from engine_fixtures import REL, graph_mode, tiny_pipeline


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline()


def test_first_guided_denoiser_step(pipe, reference):
    r = reference
    c = {k: Tensor(r[f"c_{k}"]) for k in ("crossattn", "concat", "vector")}
    uc = {k: Tensor(r[f"uc_{k}"]) for k in ("crossattn", "concat", "vector")}
    cond = pipe.guider.prepare_cond(c, uc)
    sigma0 = float(r["sigmas"][0])
    x = Tensor(r["randn"] * np.sqrt(1.0 + sigma0 ** 2))
    ioi = Tensor(np.zeros((2, 5), np.float32))
    denoised = pipe.denoiser_step(x, Tensor([sigma0]), cond["concat"], cond["crossattn"], cond["vector"], ioi, 5)
    assert_close("denoised_step0", denoised.asnumpy(), r["denoised_step0"], rel=REL)


def test_video_graph_mode(pipe, reference):
    r = reference
    with graph_mode():
        out = pipe.generate(r["image"], latent_noise=r["randn"], cond_noise=r["cond_noise"])
    assert_close("samples_z", out["latents"], r["samples_z"], rel=2e-4)
    assert_close("samples_x", out["frames"], r["samples_x"], rel=2e-4)
    assert_close("video", out["video"], r["video"], max_abs=2e-3, mean_abs=2e-4)
    assert out["video"].dtype == np.float32 and out["video"].min() >= 0 and out["video"].max() <= 1
    timings = pipe.last_timings
    assert len(timings["step_s"]) == 4 and timings["decode_s"] > 0
