"""svd_ms.seeds: the one seed rule (range, drawing, batch offsets, clip seeds, the noise source)."""
import numpy as np
import pytest

from svd_ms import seeds
from svd_ms.errors import ParamError


@pytest.mark.parametrize("bad", [-1, 2**32, 1.5, "3", True, None])
def test_seeds_out_of_range_name_their_field(bad):
    with pytest.raises(ParamError) as info:
        seeds.check_seed(bad, "seed")
    assert info.value.field == "seed" and str(info.value).startswith("seed=") and "4294967295" in str(info.value)


def test_valid_seeds_pass_as_ints():
    assert seeds.check_seed(np.uint32(7)) == 7 and type(seeds.check_seed(np.int64(0))) is int
    assert seeds.check_seed(2**32 - 1) == 2**32 - 1


def test_resolve_keeps_a_given_seed_and_draws_a_valid_one_otherwise():
    assert seeds.resolve_seed(123) == 123
    drawn = {seeds.resolve_seed(None) for _ in range(20)}
    assert all(isinstance(s, int) and 0 <= s < seeds.SEED_MOD for s in drawn) and len(drawn) > 1
    with pytest.raises(ParamError):
        seeds.resolve_seed(-5)


def test_batch_offsets_wrap_at_2_32():
    assert seeds.offset_seed(10, 3) == 13
    assert seeds.offset_seed(2**32 - 1, 2) == 1


def test_clip_seeds_start_at_the_seed_and_avoid_the_neighbours():
    assert seeds.clip_seed(55, 0) == 55
    later = [seeds.clip_seed(55, k) for k in range(1, 6)]
    assert len(set(later)) == 5 and not set(later) & {seeds.offset_seed(55, i) for i in range(-5, 6)}
    assert later == [seeds.clip_seed(55, k) for k in range(1, 6)]  # a function of (seed, index) only


def test_noise_comes_from_numpys_default_rng():
    a = seeds.noise_generator(9).standard_normal(4)
    assert np.array_equal(a, np.random.default_rng(9).standard_normal(4))
