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
