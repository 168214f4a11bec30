"""SV3D_u and AnimateLCM's 4-step sampling as they run on an Ascend NPU, on this CPU host: the
policy forced to Ascend, every Ascend-only operation replaced by its contract double
(kernel_contracts.py), graph mode, against the upstream fixtures within the float16 bounds of
tests/test_precision.py. Each case builds its own model; the tiny SVD's cases are in
test_pipeline_on_ascend.py."""
import json
import os

import numpy as np
import pytest
from PIL import Image

import test_animatelcm as lcm
from ascend.test_pipeline_on_ascend import FP16_VIDEO_BOUNDS, _attention_choices
from conftest import REFERENCE, assert_close

# The final latents of a float16 run against the float32 upstream ones (test_precision.py bounds
# the video only; the latents get this relative bound, 2e-2 of their largest value).
FP16_LATENTS_REL = 2e-2


# O2 only: O0's Ascend code (float16 q/k/v for the fused kernel) runs in test_pipeline_on_ascend.py.
@pytest.mark.parametrize("amp_level", ["O2"])
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


# ---- AnimateLCM: 4-step consistency sampling ------------------------------------------------------
@pytest.fixture(scope="module")
def lcm_checkpoint(tmp_path_factory):
    """tiny_animatelcm_svd converted once: (sgm config, checkpoint)."""
    from svd_tools.convert import convert

    work = tmp_path_factory.mktemp("animatelcm_ascend")
    config = str(work / "tiny_animatelcm_svd.sgm.yaml")
    lcm.sgm_config(config)
    convert(lcm.FOLDER, config, str(work), log=lambda *a, **k: None)
    return config, str(work / "tiny_animatelcm_svd.ckpt")


@pytest.mark.parametrize("amp_level", ["O2", "O0"])
def test_animatelcm_on_ascend(ascend, lcm_checkpoint, amp_level):
    """AnimateLCM's 4-step run with guidance 1 to 1.2, every noise draw upstream's."""
    from svd_ms.pipeline import SVDInferPipeline

    run = "cfg_4step"
    reference = np.load(os.path.join(REFERENCE, "tiny_animatelcm_svd.reference.npz"))
    r = {k.split(".", 1)[1]: reference[k] for k in reference.files if k.startswith(run + ".")}
    settings = lcm.CASE["common_settings"]
    steps = lcm.CASE["runs"][run]["call_kwargs"]["num_inference_steps"]
    pipe = SVDInferPipeline(*lcm_checkpoint, amp_level=amp_level, num_frames=settings["num_frames"],
                            fps=settings["fps"], motion_bucket_id=settings["motion_bucket_id"],
                            noise_aug_strength=settings["noise_aug_strength"],
                            decode_chunk_size=settings["decode_chunk_size"])
    pipe.use_sampler(lcm.lcm_config(*lcm.GUIDANCE[run]), num_steps=steps)
    assert set(_attention_choices(pipe.engine)) == {"flash"}
    with Image.open(lcm.IMAGE) as im:  # the reference's 96x64 pixels as they are, not the path
        pixels = np.asarray(im.convert("RGB"))
    noise = r["scheduler_step_noise"].reshape((-1,) + r["initial_latents_unit"].shape[1:])
    out = pipe.generate(pixels, latent_noise=r["initial_latents_unit"][0], cond_noise=r["cond_image_noise"],
                        sampler_noise=noise)
    assert_close(f"ascend_{amp_level}_animatelcm_{run}_latents", out.latents, r["final_latents"][0],
                 rel=FP16_LATENTS_REL)
    assert_close(f"ascend_{amp_level}_animatelcm_{run}_frames", out.video.transpose(0, 2, 3, 1), r["frames"][0],
                 **FP16_VIDEO_BOUNDS)
