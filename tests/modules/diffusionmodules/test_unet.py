"""VideoUNet vs upstream, in graph mode (compiled once, run on both image_only_indicator inputs)."""
import numpy as np
import pytest
from mindspore import Tensor

from conftest import assert_close
from engine_fixtures import REL, graph_mode, tiny_pipeline


@pytest.fixture(scope="module")
def unet():
    return tiny_pipeline().engine.model.diffusion_model


def test_unet_graph_mode(unet, reference):
    r = reference
    frames = r["unet_x"].shape[0] // 2
    args = [Tensor(r["unet_x"]), Tensor(r["unet_t"]), Tensor(r["unet_context"]), Tensor(r["unet_y"]), None, frames]
    with graph_mode():
        out = unet(*args, Tensor(np.zeros((2, frames), np.float32))).asnumpy()
        mixed = unet(*args, Tensor(r["unet_ioi_mixed"])).asnumpy()
    assert_close("unet_out", out, r["unet_out"], rel=REL)
    assert_close("unet_out_ioi_mixed", mixed, r["unet_out_ioi_mixed"], rel=REL)
