"""One fine-tuning step as it runs on an Ascend NPU (PyNative, as train.py runs), on this CPU host
through the contract doubles, at fp32 and fp16 training precision, against upstream's step
(../shared/reference/tiny_svd.train_reference.npz)."""
import json
import os

import mindspore as ms
import numpy as np
import pytest

from ascend import kernel_contracts
from svd_ms import policy
from conftest import REFERENCE, TINY_CONFIG, TINY_WEIGHTS, assert_close

# float16 rounding of q, k, v and of the kernel's gradients (and of every UNet matmul under fp16).
LOSS_REL = {"fp32": 1e-4, "fp16": 2e-3}
GRAD_REL = {"fp32": 5e-3, "fp16": 1e-1}
# The trainer's initial dynamic loss scale (train.loss_scale.init, svd_ms/training/trainer.py).
LOSS_SCALE = 65536.0


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_training_step_on_ascend(monkeypatch, precision):
    from svd_ms.checkpoint import build_engine, load_checkpoint_into
    from svd_ms.precision import apply_training_precision

    calls = []
    real = kernel_contracts.flash_attention_score

    def counted(query, *args, **kwargs):
        calls.append(query.dtype)
        return real(query, *args, **kwargs)
    kernel_contracts.install(monkeypatch)
    monkeypatch.setattr(ms.ops, "flash_attention_score", counted)

    ref = dict(np.load(os.path.join(REFERENCE, "tiny_svd.train_reference.npz")))
    meta = json.load(open(os.path.join(REFERENCE, "tiny_svd.train.json")))
    engine = build_engine(TINY_CONFIG)
    load_checkpoint_into(engine, TINY_WEIGHTS)
    apply_training_precision(engine, precision)
    frames = ref["frames"]
    cond_aug = np.asarray(meta["cond_aug"], np.float32)
    batch = {"video": frames, "cond_frames_without_noise": frames[:, 0],
             "cond_frames": frames[:, 0] + cond_aug[:, None, None, None] * ref["cond_noise"],
             "fps_id": np.asarray(meta["fps_id"], np.float32),
             "motion_bucket_id": np.asarray(meta["motion"], np.float32),
             "cond_aug": cond_aug, "num_video_frames": meta["T"]}
    unet_params = engine.model.diffusion_model.trainable_params()

    # The kernel's gradients are float16 whatever the training precision: unscaled, the small ones
    # flush (measured: the time_mixer.mix_factor gradient 3.3e-2 relative off at fp32, 2.2e-1 at
    # fp16), so the policy turns loss scaling on for both on Ascend, and this step scales as the
    # trainer does.
    assert policy.default_loss_scaling(precision)
    scale = LOSS_SCALE

    def mean_loss():
        loss = engine.training_loss(batch, sigmas=ref["sigmas"], noise=ref["noise"])
        return loss.mean() * scale

    loss, grads = ms.value_and_grad(mean_loss, None, unet_params)()
    loss, grads = loss / scale, [g / scale for g in grads]
    assert calls and set(calls) == {ms.float16}, "the fused kernel (its double) took float16 q, k, v"
    assert_close(f"ascend_train_{precision}_loss", float(loss.asnumpy()), float(ref["loss"]), rel=LOSS_REL[precision])
    prefix = "model.diffusion_model."
    got = {p.name[len(prefix):]: g.asnumpy() for p, g in zip(unet_params, grads)}
    for key in sorted(k for k in ref if k.startswith("grad.")):
        name = key[len("grad."):]
        if np.abs(ref[key]).max() < 1e-8:  # mathematically zero (softmax over one context token)
            continue
        assert_close(f"ascend_train_{precision}_{name}", got[name], ref[key], rel=GRAD_REL[precision])
