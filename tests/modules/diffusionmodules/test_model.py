"""svd_ms.modules.diffusionmodules.model: the VAE's decoder lets go of itself once dropped after
running in graph mode (what a dropped graph-mode pipeline gives back depends on it; the pipeline
figures are tests/runtime/test_pipeline_memory.py's)."""
import gc
import weakref

import mindspore as ms
import numpy as np
import pytest

from svd_ms.modules.autoencoding.temporal_ae import VideoDecoder
from svd_ms.modules.diffusionmodules.model import Decoder

TINY = dict(ch=32, out_ch=3, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=[], in_channels=3, resolution=16,
            z_channels=4)


@pytest.mark.parametrize("decoder", ["image", "video"])
def test_decoder_run_in_graph_mode_is_collected_when_dropped(decoder):
    """MindSpore 2.10's graph compiler kept every decoder alive (with its compiled graph) while its
    construct walked the levels with reversed(range(...)): 0.15 GB per dropped tiny pipeline."""
    z = ms.Tensor(np.random.default_rng(0).standard_normal((2, 4, 4, 4)).astype(np.float32))
    ms.set_context(mode=ms.GRAPH_MODE)
    try:
        model = Decoder(**TINY) if decoder == "image" else VideoDecoder(**TINY, video_kernel_size=[3, 1, 1])
        model.set_train(False)
        out = model(z, 2)
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE)
    assert out.shape == (2, 3, 8, 8)
    alive = weakref.ref(model)
    del model
    gc.collect()
    assert alive() is None, f"the {decoder} decoder is still referenced after it was dropped and collected"
