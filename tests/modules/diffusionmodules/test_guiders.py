"""Guiders (svd_ms/modules/diffusionmodules/guiders.py): per-frame scales bit-equal to upstream's
(the recorded runs of tiny_svd.samplers and AnimateLCM's torch.linspace), the combination of the
two copies, and which guiders let the step skip the unconditional copy."""
import json
import os

import numpy as np
import pytest
from mindspore import Tensor

from conftest import REFERENCE
from svd_ms.errors import ConfigError
from svd_ms.modules.diffusionmodules import guiders as G
from svd_ms.util import instantiate_from_config


@pytest.fixture(scope="module")
def runs():
    with open(os.path.join(REFERENCE, "tiny_svd.samplers.json")) as f:
        runs = json.load(f)["runs"]
    arrays = dict(np.load(os.path.join(REFERENCE, "tiny_svd.samplers.npz")))
    return runs, arrays


def test_scales_equal_upstream_runs(runs):
    runs, arrays = runs
    checked = set()
    for name, run in runs.items():
        key = f"{name}.guidance_scale"
        if key not in arrays:
            continue
        guider = instantiate_from_config({"target": "sgm." + run["guider"], "params": run["guider_params"]})
        print(f"[exact] {key}: {guider.frame_scales.tolist()} vs {arrays[key].tolist()}")
        assert np.array_equal(guider.frame_scales, arrays[key].astype(np.float32))
        checked.add(run["guider"].rsplit(".", 1)[-1])
    assert checked == {"LinearPredictionGuider", "TrianglePredictionGuider", "TrapezoidPredictionGuider"}


def test_linear_scale_rounds_like_torch_linspace():
    """AnimateLCM's run guides with torch.linspace(1.0, 1.2, 5), whose 4th value differs from
    numpy's linspace in the last bit."""
    expected = np.load(os.path.join(REFERENCE, "tiny_animatelcm_svd.reference.npz"))["cfg_4step.guidance_scale"]
    scales = G.LinearPredictionGuider(max_scale=1.2, num_frames=5, min_scale=1.0).frame_scales
    print(f"[exact] linear 1.0->1.2: {scales.tolist()} vs {expected.ravel().tolist()}")
    assert np.array_equal(scales, expected.ravel())
    assert not np.array_equal(np.linspace(1.0, 1.2, 5, dtype=np.float32), expected.ravel())


def test_triangle_period_and_fusing():
    one = G.TrianglePredictionGuider(max_scale=3.0, num_frames=5, min_scale=1.0, period=1.0)
    assert np.array_equal(one.frame_scales, G.TrianglePredictionGuider(3.0, 5, 1.0, period=[1.0]).frame_scales)
    np.testing.assert_allclose(one.frame_scales, [1.0, 2.0, 3.0, 2.0, 1.0])
    # period 0.5 over frames at 0, .25, .5, .75, 1: wave 0, 1, 0, 1, 0; with period 1: 0, .5, 1, .5, 0
    fused = {f: G.TrianglePredictionGuider(3.0, 5, 1.0, period=[0.5, 1.0], period_fusing=f).frame_scales
             for f in ("mean", "multiply", "max")}
    np.testing.assert_allclose(fused["mean"], [1.0, 2.5, 2.0, 2.5, 1.0])
    np.testing.assert_allclose(fused["multiply"], [1.0, 2.0, 1.0, 2.0, 1.0])
    np.testing.assert_allclose(fused["max"], [1.0, 3.0, 3.0, 3.0, 1.0])
    with pytest.raises(ConfigError, match="period_fusing must be one of"):
        G.TrianglePredictionGuider(3.0, 5, period_fusing="sum")
    with pytest.raises(ConfigError, match="period must be"):
        G.TrianglePredictionGuider(3.0, 5, period=[])


def test_trapezoid_plateau_is_one():
    scales = G.TrapezoidPredictionGuider(max_scale=2.5, num_frames=10, min_scale=1.5, edge_perc=0.3).frame_scales
    np.testing.assert_allclose(scales, [1.5, 2.0, 2.5, 1.0, 1.0, 1.0, 1.0, 2.5, 2.0, 1.5])
    with pytest.raises(ConfigError, match="edge_perc"):
        G.TrapezoidPredictionGuider(2.5, 10, edge_perc=0.6)


def test_combination():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2 * 5, 4, 2, 3)).astype(np.float32)
    x_u, x_c = x[:5], x[5:]
    linear = G.LinearPredictionGuider(max_scale=2.5, num_frames=5, min_scale=1.0)
    scale = linear.frame_scales[:, None, None, None]
    np.testing.assert_allclose(linear(Tensor(x), Tensor([1.0])).asnumpy(), x_u + scale * (x_c - x_u), rtol=1e-6)
    np.testing.assert_allclose(G.VanillaCFG(1.8)(Tensor(x), Tensor([1.0])).asnumpy(), x_u + 1.8 * (x_c - x_u),
                               rtol=1e-6)
    assert np.array_equal(G.IdentityGuider()(Tensor(x_c), Tensor([1.0])).asnumpy(), x_c)


@pytest.mark.parametrize("guider, skipped", [
    (G.LinearPredictionGuider(max_scale=1.0, num_frames=5, min_scale=1.0), True),
    (G.VanillaCFG(1.0), True),
    (G.IdentityGuider(), True),
    (G.TrapezoidPredictionGuider(max_scale=2.0, num_frames=5, edge_perc=0.1), True),  # no edge: all 1.0
    (G.LinearPredictionGuider(max_scale=1.2, num_frames=5, min_scale=1.0), False),
    (G.VanillaCFG(1.8), False),
    (G.TrianglePredictionGuider(max_scale=3.0, num_frames=5, min_scale=1.0), False),
])
def test_skip_unused_copies(guider, skipped):
    step_guider = G.skip_unused_copies(guider)
    assert (step_guider.num_copies == 1) == skipped
    assert (step_guider is guider) == (not skipped or guider.num_copies == 1)
    assert step_guider.unguided == skipped


def test_spatiotemporal_scale_over_frames_and_views():
    """SV4D 2.0's 8-view guider: half a rise over the frames plus half a triangle over the views.
    T=2, V=3 by hand: frames [0, .5], views [0, .5, 0] -> [[0, .5, 0], [.5, 1, .5]] on [1.5, 2.5]."""
    guider = instantiate_from_config({"target": "sgm.modules.diffusionmodules.guiders.SpatiotemporalPredictionGuider",
                                      "params": {"max_scale": 2.5, "min_scale": 1.5, "num_frames": 6,
                                                 "num_views": 3}})
    assert guider.frame_scales.tolist() == [1.5, 2.0, 1.5, 2.0, 2.5, 2.0]
    x = np.concatenate([np.zeros((6, 1), np.float32), np.ones((6, 1), np.float32)])
    assert np.allclose(guider(Tensor(x), None).asnumpy().ravel(), guider.frame_scales)
    with pytest.raises(ConfigError, match="multiple of num_views"):
        G.SpatiotemporalPredictionGuider(2.0, num_frames=7, num_views=3)


def test_sv4d2_four_view_scale_equals_upstream_run():
    """The 4-view script's LinearPredictionGuider over the 20 images of a tiny_sv4d2 chunk."""
    recorded = np.load(os.path.join(REFERENCE, "tiny_sv4d2.reference.npz"))["guidance_scale"]
    guider = G.LinearPredictionGuider(2.0, num_frames=20, additional_cond_keys=["cond_view", "cond_motion"])
    assert np.array_equal(guider.frame_scales, recorded)
    assert guider.guided_keys[-2:] == ("cond_view", "cond_motion")
