"""DiffusionEngine.training_loss against upstream's StandardDiffusionLoss on the tiny model.

The reference (../shared/reference/tiny_svd.train_reference.npz, README "tiny_svd training
step") is one fine-tuning step of upstream sgm in float32 on CPU with every draw fixed: 2 videos
of 4 frames at 192x128, one sigma per video, l2 loss weighted by EDMWeighting(1), the
VScalingWithEDMcNoise denoiser, image_only_indicator zeros, latents = posterior mode * 0.18215.
One forward and backward pass through the public API is shared by the assertions.
"""
import json
import os

import mindspore as ms
import numpy as np
import pytest

from conftest import REFERENCE, TINY_CONFIG, TINY_WEIGHTS, assert_close

REL = 5e-5        # "a few 1e-5 relative" (loss, latents, denoised, conditioning)
GRAD_REL = 1e-4   # gradients
# Absolute floor for gradients that are mathematically zero (e.g. attn2.to_k: softmax over a
# single context token is constant), where the reference holds float32 noise of ~1e-11.
GRAD_FLOOR = 1e-8
TEMPORAL_TAGS = ("time_stack", "time_mixer", "time_pos_embed")


@pytest.fixture(scope="module")
def train_ref():
    npz = os.path.join(REFERENCE, "tiny_svd.train_reference.npz")
    meta = os.path.join(REFERENCE, "tiny_svd.train.json")
    assert os.path.isfile(npz) and os.path.isfile(meta), f"training reference missing in {REFERENCE}"
    with open(meta) as f:
        return dict(np.load(npz)), json.load(f)


@pytest.fixture(scope="module")
def step(train_ref):
    """Loss, intermediates and gradients of the mean loss w.r.t. every UNet parameter."""
    from svd_ms.checkpoint import build_engine, load_checkpoint_into
    from svd_ms.runtime import setup_device

    setup_device("CPU", mode=1)
    ref, meta = train_ref
    engine = build_engine(TINY_CONFIG)
    load_checkpoint_into(engine, TINY_WEIGHTS)
    frames = ref["frames"]
    cond_aug = np.asarray(meta["cond_aug"], np.float32)
    batch = {
        "video": frames,
        "cond_frames_without_noise": frames[:, 0],
        "cond_frames": frames[:, 0] + cond_aug[:, None, None, None] * ref["cond_noise"],
        "fps_id": np.asarray(meta["fps_id"], np.float32),
        "motion_bucket_id": np.asarray(meta["motion"], np.float32),
        "cond_aug": cond_aug,
        "num_video_frames": meta["T"],
    }
    unet_params = engine.model.diffusion_model.trainable_params()

    def mean_loss():
        loss, inputs = engine.training_loss(batch, sigmas=ref["sigmas"], noise=ref["noise"], return_inputs=True)
        return (loss.mean(), loss, inputs["latents"], inputs["denoised"], inputs["crossattn"], inputs["concat"],
                inputs["vector"])

    (mean, *aux), grads = ms.value_and_grad(mean_loss, None, unet_params, has_aux=True)()
    out = dict(zip(("loss_per_frame", "latents", "denoised", "crossattn", "concat", "vector"),
                   (a.asnumpy() for a in aux)))
    out["loss"] = float(mean.asnumpy())
    prefix = "model.diffusion_model."
    out["grads"] = {p.name[len(prefix):]: g.asnumpy() for p, g in zip(unet_params, grads)}
    out["engine"] = engine
    return out


def test_scaled_latents_match(step, train_ref):
    assert_close("latents (posterior mode * scale_factor)", step["latents"], train_ref[0]["latents"], rel=REL)


def test_conditioning_matches(step, train_ref):
    ref = train_ref[0]
    assert_close("c_crossattn", step["crossattn"], ref["c_crossattn"], rel=REL)
    assert_close("c_concat", step["concat"], ref["c_concat"], rel=REL)
    assert_close("c_vector", step["vector"], ref["c_vector"], rel=REL)


def test_denoised_matches(step, train_ref):
    assert_close("denoised", step["denoised"], train_ref[0]["denoised"], rel=REL)


def test_loss_matches(step, train_ref):
    ref = train_ref[0]
    assert step["loss_per_frame"].shape == (8,)
    assert_close("loss_per_frame", step["loss_per_frame"], ref["loss_per_frame"], rel=REL)
    assert_close("loss (mean)", np.float32(step["loss"]).reshape(1), ref["loss"], rel=REL)


def test_gradients_match_on_listed_parameters(step, train_ref):
    ref, meta = train_ref
    for name in meta["picks"]:
        expected = ref["grad." + name]
        actual = step["grads"][name]
        assert actual.shape == expected.shape, name
        err = float(np.abs(actual.astype(np.float64) - expected).max())
        scale = float(np.abs(expected).max())
        bound = GRAD_REL * scale + GRAD_FLOOR
        print(f"[parity] grad {name}: max_abs={err:.3e} rel={err / max(scale, 1e-30):.3e} "
              f"| bound: max_abs<={bound:.3e} (= {GRAD_REL:.0e} * max|ref| + {GRAD_FLOOR:.0e})")
        assert err <= bound, f"gradient of {name}: {err:.3e} exceeds {bound:.3e}"


def test_gradient_norms_match(step, train_ref):
    _, meta = train_ref
    sq = {"all": 0.0, "temporal": 0.0, "spatial": 0.0}
    counts = {"all": 0, "temporal": 0}
    for name, g in step["grads"].items():
        s = float((g.astype(np.float64) ** 2).sum())
        temporal = any(tag in name for tag in TEMPORAL_TAGS)
        sq["all"] += s
        sq["temporal" if temporal else "spatial"] += s
        counts["all"] += g.size
        counts["temporal"] += g.size if temporal else 0
    assert counts == {"all": meta["n_params_all"], "temporal": meta["n_params_temporal"]}
    for key in ("all", "temporal", "spatial"):
        actual, expected = np.sqrt(sq[key]), meta[f"grad_norm_{key}"]
        rel = abs(actual - expected) / expected
        print(f"[parity] grad norm {key}: {actual:.7f} vs {expected:.7f} rel={rel:.3e} | bound: rel<={GRAD_REL:.0e}")
        assert rel <= GRAD_REL


def test_only_the_unet_is_trainable(step):
    engine = step["engine"]
    unet_ids = {id(p) for p in engine.model.diffusion_model.get_parameters()}
    others = [p.name for p in engine.get_parameters() if id(p) not in unet_ids and p.requires_grad]
    assert not others, f"frozen parts have trainable parameters: {others[:5]}"


def test_training_loss_from_latents_and_draws(step, train_ref):
    """The `latents` input gives the same loss as `video`; without sigmas/noise the draws come
    from the generator (reproducible) with one sigma per video."""
    ref, meta = train_ref
    engine = step["engine"]
    frames = ref["frames"]
    cond_aug = np.asarray(meta["cond_aug"], np.float32)
    batch = {"latents": ref["latents"], "cond_frames_without_noise": frames[:, 0],
             "cond_frames": frames[:, 0] + cond_aug[:, None, None, None] * ref["cond_noise"],
             "fps_id": np.asarray(meta["fps_id"], np.float32), "motion_bucket_id": np.asarray(meta["motion"], np.float32),
             "cond_aug": cond_aug, "num_video_frames": 4}
    loss = engine.training_loss(batch, sigmas=ref["sigmas"], noise=ref["noise"]).asnumpy()
    assert_close("loss_per_frame from latents", loss, ref["loss_per_frame"], rel=REL)
    a = engine.training_inputs(batch, generator=np.random.default_rng(3))
    b = engine.training_inputs(batch, generator=np.random.default_rng(3))
    sig = a["sigmas"].asnumpy()
    assert sig.shape == (8,) and np.all(sig[:4] == sig[0]) and np.all(sig[4:] == sig[4]) and sig[0] != sig[4]
    assert np.array_equal(sig, b["sigmas"].asnumpy()) and np.array_equal(a["noise"].asnumpy(), b["noise"].asnumpy())


def test_loss_pieces():
    from mindspore import Tensor

    from svd_ms.modules.diffusionmodules.loss_weighting import EDMWeighting
    from svd_ms.modules.diffusionmodules.sigma_sampling import EDMSampling

    sigma = np.array([0.02, 0.5, 1.0, 7.0, 700.0], np.float32)
    for sd in (0.5, 1.0):
        w = EDMWeighting(sd)(Tensor(sigma)).asnumpy()
        np.testing.assert_allclose(w, (sigma ** 2 + sd ** 2) / (sigma * sd) ** 2, rtol=1e-6)
    log_sigma = np.log(EDMSampling(p_mean=1.0, p_std=1.6)(20000, generator=np.random.default_rng(0)).asnumpy())
    assert abs(log_sigma.mean() - 1.0) < 0.05 and abs(log_sigma.std() - 1.6) < 0.05


def test_posterior_sampling_and_image_conditioning_drop(step, train_ref):
    from mindspore import Tensor

    ref, meta = train_ref
    engine = step["engine"]
    frames = Tensor(ref["frames"][0, :2])
    mode = engine.encode_video_latents(frames).asnumpy()
    zero_noise = Tensor(np.zeros(mode.shape, np.float32))
    np.testing.assert_array_equal(engine.encode_video_latents(frames, True, zero_noise).asnumpy(), mode)
    sampled = engine.encode_video_latents(frames, True, Tensor(np.ones(mode.shape, np.float32))).asnumpy()
    assert np.all(sampled > mode)  # mean + std * 1
    assert engine.first_stage_model.regularization.sample is True  # the config's setting is restored
    cond_aug = np.asarray(meta["cond_aug"], np.float32)
    batch = {"latents": ref["latents"], "cond_frames_without_noise": ref["frames"][:, 0],
             "cond_frames": ref["frames"][:, 0] + cond_aug[:, None, None, None] * ref["cond_noise"],
             "fps_id": np.asarray(meta["fps_id"], np.float32), "motion_bucket_id": np.asarray(meta["motion"], np.float32),
             "cond_aug": cond_aug, "num_video_frames": 4, "image_cond_keep": np.array([0.0, 1.0], np.float32)}
    inputs = engine.training_inputs(batch, sigmas=ref["sigmas"], noise=ref["noise"])
    for key in ("crossattn", "concat"):  # video 0 dropped, video 1 kept
        value = inputs[key].asnumpy()
        assert not value[:4].any()
        assert np.abs(value[4:] - ref[f"c_{key}"][4:]).max() <= REL * np.abs(ref[f"c_{key}"]).max()
    np.testing.assert_allclose(inputs["vector"].asnumpy(), ref["c_vector"], rtol=0, atol=1e-6)
