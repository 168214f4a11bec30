"""benchmarks/layer_times.py: the per-layer timing wraps and restores `construct`."""
from mindspore import nn

from benchmarks.layer_times import report, timed_layers


class Inner(nn.Cell):
    def construct(self, x):
        return x + 1


class Outer(nn.Cell):
    def __init__(self):
        super().__init__()
        self.inner = Inner()

    def construct(self, x):
        return self.inner(self.inner(x))


def test_calls_are_counted_per_type_and_construct_is_restored():
    outer = Outer()
    original = Inner.__dict__["construct"]
    with timed_layers({"outer": Outer, "inner": Inner}) as stats:
        assert outer(1) == 3
        outer(1)
    assert stats["outer"][0] == 2 and stats["inner"][0] == 4
    assert stats["outer"][1] >= stats["inner"][1] / 2 >= 0  # inclusive: outer contains its inners
    assert Inner.__dict__["construct"] is original and outer(1) == 3
    table = report(stats, step_s=1.0)
    assert "| outer | 2 |" in table and "| inner | 4 |" in table
