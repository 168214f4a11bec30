"""svd_ms.weights: deterministic random weights of a sensible scale (the untrained demo, tests)."""
import numpy as np
from mindspore import Parameter, Tensor, nn


def sevens(*shape):
    return Parameter(Tensor(np.full(shape, 7.0, np.float32)))


class Leaf(nn.Cell):
    """One cell holding parameters under the given leaf names."""

    def __init__(self, **shapes):
        super().__init__()
        for leaf, shape in shapes.items():
            setattr(self, leaf, sevens(*shape))

    def construct(self, x):
        return x


class Toy(nn.Cell):
    """Parameter names as the engine has them: a matrix, a conv kernel, norm scales, a blend factor, biases."""

    def __init__(self):
        super().__init__()
        self.proj = Leaf(weight=(512, 256), bias=(512,))
        self.conv = Leaf(weight=(64, 128, 3, 3))
        self.norm1 = Leaf(weight=(512,), bias=(512,))
        self.in_layers = nn.CellList([Leaf(weight=(64,))])   # a resblock's first GroupNorm
        self.visual = nn.CellDict({"ln_post": Leaf(weight=(512,))})  # OpenCLIP's final LayerNorm
        self.time_mixer = Leaf(mix_factor=(1,))

    def construct(self, x):
        return x


def values(cell):
    return {name: p.asnumpy().copy() for name, p in cell.parameters_and_names()}


def test_randomize_is_deterministic_per_seed():
    from svd_ms.weights import randomize

    a, b, c = Toy(), Toy(), Toy()
    randomize(a, seed=3)
    randomize(b, seed=3)
    randomize(c, seed=4)
    va, vb, vc = values(a), values(b), values(c)
    assert all(np.array_equal(va[n], vb[n]) for n in va)
    assert not np.array_equal(va["proj.weight"], vc["proj.weight"])


def test_randomize_scales_by_role():
    from svd_ms.weights import randomize

    toy = Toy()
    randomize(toy, seed=0)
    v = values(toy)
    assert abs(v["proj.weight"].std() - 1 / np.sqrt(256)) < 0.003            # N(0, 1/fan_in)
    assert abs(v["conv.weight"].std() - 1 / np.sqrt(128 * 9)) < 0.002
    assert abs(v["proj.bias"].std() - 0.02) < 0.005 and abs(v["norm1.bias"].std() - 0.02) < 0.005  # small
    for scale in ("norm1.weight", "in_layers.0.weight", "visual.ln_post.weight"):      # norm scales start at 1
        assert np.array_equal(v[scale], np.ones_like(v[scale])), scale
    assert v["time_mixer.mix_factor"].tolist() == [0.0]                        # blend factors at 0
    assert all(np.isfinite(a).all() and (a != 7.0).all() for a in v.values())  # every parameter was set
