"""Temporal VAE decoder vs upstream: chunked (3 + 2 frames) and all frames at once."""
import pytest
from mindspore import Tensor

from conftest import assert_close
from engine_fixtures import REL, tiny_pipeline


@pytest.fixture(scope="module")
def engine():
    return tiny_pipeline().engine


def test_decode_chunked(engine, reference):
    frames = engine.decode_first_stage(Tensor(reference["samples_z"]), chunk_size=3).asnumpy()
    assert_close("samples_x", frames, reference["samples_x"], rel=REL)


def test_decode_unchunked(engine, reference):
    frames = engine.decode_first_stage(Tensor(reference["samples_z"]), chunk_size=5).asnumpy()
    assert_close("samples_x_unchunked", frames, reference["samples_x_unchunked"], rel=REL)
