"""svd_ms.weights.randomize: deterministic random weights of a sensible scale for the demo and tests."""
import mindspore as ms
import numpy as np
from mindspore import nn

from svd_ms.weights import randomize


class Tiny(nn.Cell):
    def __init__(self):
        super().__init__()
        zeros = lambda *shape: ms.Parameter(ms.Tensor(np.zeros(shape, np.float32)))  # noqa: E731
        self.proj = nn.Dense(256, 64)
        self.norm_weight = zeros(64)
        self.mix_factor = zeros(1)


def _values(cell):
    return {name: p.asnumpy().copy() for name, p in cell.parameters_and_names()}


def test_same_seed_same_weights_and_sensible_scales():
    a, b, c = Tiny(), Tiny(), Tiny()
    randomize(a, seed=3)
    randomize(b, seed=3)
    randomize(c, seed=4)
    va, vb, vc = _values(a), _values(b), _values(c)
    assert all(np.array_equal(va[n], vb[n]) for n in va)
    assert not np.array_equal(va["proj.weight"], vc["proj.weight"])
    std = va["proj.weight"].std()
    assert abs(std - 1 / 16) < 0.005, std  # N(0, 1/fan_in), fan_in 256
    assert np.all(va["mix_factor"] == 0)
    bias = va["proj.bias"]
    assert 0 < np.abs(bias).max() < 0.1  # small, not zero
