"""svd_ms.runtime.budget: runs that cannot fit are refused with the estimate and the limit."""
import pytest

from svd_ms.errors import InputError
from svd_ms.runtime.budget import check_fits, estimate_generation_bytes


def test_estimate_grows_with_frames_and_size():
    small = estimate_generation_bytes(14, 256, 256, 7)["total"]
    assert estimate_generation_bytes(28, 256, 256, 7)["total"] > small
    assert estimate_generation_bytes(14, 576, 1024, 7)["total"] > small


def test_too_large_is_refused_with_numbers():
    estimate = estimate_generation_bytes(100_000, 576, 1024, 8)
    with pytest.raises(InputError) as info:
        check_fits(estimate, 24 * 2**30, "100000 frames of 1024x576")
    message = str(info.value)
    assert "GiB" in message and "100000 frames" in message and "\n" not in message
    check_fits(estimate_generation_bytes(5, 128, 192, 3), 24 * 2**30, "tiny")  # fits: no error


def test_limit_is_the_memory_rule_as_given():
    """check_fits takes what runtime.memory's rule says a run may take, with no second margin."""
    from svd_ms.runtime.budget import ATTENTION_CHUNK_BYTES
    estimate = estimate_generation_bytes(14, 256, 256, 7)
    # 14 frames x 2 copies x 5 heads x 1024 tokens^2 x 4 bytes: under the chunk, so counted as it is;
    # at 576x1024 the chunking caps it.
    assert estimate["attention"] == 2 * 14 * 5 * 1024 ** 2 * 4 < ATTENTION_CHUNK_BYTES
    assert estimate_generation_bytes(14, 576, 1024, 7)["attention"] == ATTENTION_CHUNK_BYTES
    check_fits(estimate, estimate["total"], "exactly enough")
    with pytest.raises(InputError, match="more than the .* GiB this machine can give it"):
        check_fits(estimate, estimate["total"] - 1, "one byte short")
    check_fits(estimate, None, "unknown memory")  # cannot tell: no refusal
