"""The SV4D 2.0 transformer block (svd_ms/modules/spacetime_attention.py). Its numbers are checked
against upstream through the whole tiny_sv4d2 UNet (tests/pipelines/test_sv4d2.py); these tests
pin the arrangement upstream has and the tiny case alone would not single out: the 3-D camera
attention never mixes views (it attends within runs of V pixels of one view), the 8-view (non-3-D)
layout attends across views and treats them alike, and the view conditioning reaches a level by
bilinear resizing without antialiasing (halving = the mean of 2x2 pixels)."""
import numpy as np
import pytest
from mindspore import Tensor

from svd_ms.modules.spacetime_attention import PostHocSpatialTransformerWithTimeMixingAndMotion
from svd_ms.weights import randomize

B, T, V, C, HW, CTX, ADM = 1, 3, 4, 32, 4, 16, 24


def block(use_3d: bool):
    cell = PostHocSpatialTransformerWithTimeMixingAndMotion(
        C, 2, 16, context_dim=CTX, motion_context_dim=4, use_spatial_context=True, use_camera_emb=True,
        use_3d_attention=use_3d, separate_motion_merge_factor=True, adm_in_channels=ADM, ff_in=True,
        merge_strategy="learned_with_images", merge_factor=0.0, use_linear=True, time_mix_legacy=False)
    randomize(cell, seed=3)
    return cell


def inputs(seed=0, size=HW):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((B * T * V, C, size, size)).astype(np.float32)
    cam = rng.standard_normal((B * T * V, ADM)).astype(np.float32)
    context = rng.standard_normal((B, T, CTX)).astype(np.float32)
    cond_view = rng.standard_normal((B * V, 4, size, size)).astype(np.float32)
    return x, cam, context, cond_view


def run(cell, x, cam, context, cond_view):
    out = cell(Tensor(x), Tensor(cam), Tensor(context), Tensor(cond_view), T * V)
    return out.asnumpy().reshape(B, T, V, C, x.shape[-2], x.shape[-1])


def test_3d_camera_attention_never_mixes_views():
    x, cam, context, cond_view = inputs()
    changed = x.reshape(B, T, V, C, HW, HW).copy()
    changed[:, :, 1] += np.random.default_rng(9).standard_normal(changed[:, :, 1].shape)  # view 1, every frame
    for use_3d, mixes in ((True, False), (False, True)):
        cell = block(use_3d)
        a = run(cell, x, cam, context, cond_view)
        b = run(cell, changed.reshape(x.shape), cam, context, cond_view)
        others = [0, 2, 3]
        moved = np.abs(a[:, :, others] - b[:, :, others]).max()
        print(f"use_3d_attention={use_3d}: other views moved by {moved:.3e}")
        assert bool(moved > 1e-4) is mixes
        assert np.abs(a[:, :, 1] - b[:, :, 1]).max() > 1e-4


def test_8_view_layout_treats_views_alike():
    """Without 3-D attention, reordering the views (their features, camera rows and view
    conditioning together) reorders the block's output the same way."""
    cell = block(False)
    x, cam, context, cond_view = inputs(1)
    order = [2, 0, 3, 1]
    a = run(cell, x, cam, context, cond_view)
    x_p = x.reshape(B, T, V, C, HW, HW)[:, :, order].reshape(x.shape)
    cam_p = cam.reshape(B, T, V, ADM)[:, :, order].reshape(cam.shape)
    view_p = cond_view.reshape(B, V, 4, HW, HW)[:, order].reshape(cond_view.shape)
    b = run(cell, x_p, cam_p, context, view_p)
    assert np.abs(a[:, :, order] - b).max() < 1e-5


@pytest.mark.parametrize("use_3d", [True, False])
def test_view_conditioning_is_resized_bilinearly_without_antialias(use_3d):
    cell = block(use_3d)
    x, cam, context, _ = inputs(2)
    big = np.random.default_rng(4).standard_normal((B * V, 4, 2 * HW, 2 * HW)).astype(np.float32)
    halved = big.reshape(B * V, 4, HW, 2, HW, 2).mean(axis=(3, 5))
    a = run(cell, x, cam, context, big)
    b = run(cell, x, cam, context, halved)
    assert np.abs(a - b).max() < 1e-5


def test_only_the_sv4d2_settings_are_built():
    with pytest.raises(ValueError, match="time_mix_legacy=False"):
        PostHocSpatialTransformerWithTimeMixingAndMotion(C, 2, 16, context_dim=CTX, time_mix_legacy=True)
