"""GeneralConditioner outputs (cond and uncond, repeated to T frames) vs upstream."""
import pytest

from conftest import assert_close
from engine_fixtures import REL, tiny_pipeline


@pytest.fixture(scope="module")
def conditioning(reference):
    pipe = tiny_pipeline()
    return pipe.conditioning(reference["image"], reference["cond_noise"])


@pytest.mark.parametrize("key", ["crossattn", "concat", "vector"])
def test_cond_and_uncond(conditioning, reference, key):
    c, uc = conditioning
    assert_close(f"c_{key}", c[key].asnumpy(), reference[f"c_{key}"], rel=REL)
    assert_close(f"uc_{key}", uc[key].asnumpy(), reference[f"uc_{key}"], rel=REL, max_abs=1e-6 if key != "vector" else None)


# ---- SV4D 2.0: noisy VAE-encoder embedders, sigma_cond, own keys for cond_view / cond_motion ----

def test_sv4d2_conditioner_with_recorded_draws():
    import os

    import numpy as np

    from conftest import REFERENCE
    from svd_ms.checkpoint import build_engine, load_checkpoint_into
    engine = build_engine(os.path.join(REFERENCE, "tiny_sv4d2.sgm.yaml"))
    load_checkpoint_into(engine, os.path.join(REFERENCE, "tiny_sv4d2.safetensors"))
    ref = np.load(os.path.join(REFERENCE, "tiny_sv4d2.reference.npz"))
    motion = ref["images_v0"][3:8]  # chunk 1's input frames
    batch = {"cond_frames_without_noise": motion, "cond_frames": np.repeat(motion, 4, axis=0),
             "polar_rad": ref["chunk1.polar_rad"], "azimuth_rad": ref["chunk1.azimuth_rad"],
             "cond_view": ref["chunk1.cond_view_frames"], "cond_motion": motion}
    noise = {k: ref[f"chunk1.noise_{k}"] for k in ("cond_frames", "cond_view", "cond_motion")}
    zero = ["cond_frames", "cond_frames_without_noise", "cond_view", "cond_motion"]
    c, uc = engine.conditioner.get_unconditional_conditioning(batch, force_uc_zero_embeddings=zero, noise=noise)
    assert sorted(c) == sorted(uc) == ["concat", "cond_motion", "cond_view", "crossattn", "vector"]
    for key in c:
        assert_close(f"sv4d2 c_{key}", c[key].asnumpy(), ref[f"chunk1.c_{key}"], rel=2e-5)
        assert_close(f"sv4d2 uc_{key}", uc[key].asnumpy(), ref[f"chunk1.uc_{key}"], max_abs=1e-6)
    # the vector's first 32 values embed ZeroSampler's 1e-5 (cos 1, sin ~0), not 0
    assert abs(float(c["vector"].asnumpy()[0, 16]) - 1e-5) < 1e-9
