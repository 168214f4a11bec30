"""Builders shared by the engine tests: the tiny reference model, loaded through the public API."""
import mindspore as ms

from conftest import TINY_CONFIG, TINY_WEIGHTS

REL = 5e-5  # "a few 1e-5 relative" for single modules in float32


def tiny_pipeline(**overrides):
    from svd_ms.pipeline import SVDInferPipeline
    kwargs = dict(num_frames=5, fps=7, motion_bucket_id=127, noise_aug_strength=0.02, decode_chunk_size=3,
                  num_steps=4)
    kwargs.update(overrides)
    return SVDInferPipeline(TINY_CONFIG, TINY_WEIGHTS, **kwargs)


class graph_mode:
    """Run a block in MindSpore graph mode, restoring PyNative afterwards."""

    def __enter__(self):
        ms.set_context(mode=ms.GRAPH_MODE)

    def __exit__(self, *exc):
        ms.set_context(mode=ms.PYNATIVE_MODE)
