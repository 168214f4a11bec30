"""benchmarks/profile_ops.py: the op tables it reads from MindSpore's and PyTorch's profilers."""
import glob
import os

import numpy as np

from benchmarks.profile_ops import mindspore_op_table, shares, torch_op_table


def test_mindspore_profiler_table_is_read(tmp_path):
    """A real MindSpore profile of three ops on CPU: every op type appears with its call count."""
    import mindspore as ms
    from mindspore import ops

    x = ms.Tensor(np.random.default_rng(0).standard_normal((4, 8, 16, 16)).astype(np.float32))
    gamma, beta = ms.Tensor(np.ones(8, np.float32)), ms.Tensor(np.zeros(8, np.float32))
    profiler = ms.Profiler(output_path=str(tmp_path))
    for _ in range(2):
        (ops.erf(x) * 2 + ops.group_norm(x, 4, gamma, beta)).asnumpy()
    profiler.stop()
    profiler.analyse()
    found = glob.glob(os.path.join(tmp_path, "**", "cpu_op_type_info_*.csv"), recursive=True)
    assert found, "MindSpore's profiler wrote no op table"
    rows = {r["op"]: r for r in mindspore_op_table(found[0])}
    print(f"[profile] {rows}")
    assert rows["Erf"]["calls"] == 2 and rows["GroupNorm"]["calls"] == 2
    assert all(r["ms"] >= 0 for r in rows.values())


def test_torch_profiler_table_counts_self_time_once():
    import torch

    x = torch.randn(64, 64)
    lin = torch.nn.Linear(64, 64)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(3):
            torch.nn.functional.gelu(lin(x))
    rows = {r["op"]: r for r in torch_op_table(prof)}
    assert rows["aten::gelu"]["calls"] == 3
    # self time: the wrapper aten::linear adds (almost) nothing over the addmm it calls
    assert rows["aten::addmm"]["ms"] > 0


def test_shares_keep_the_largest_and_sum_the_rest():
    rows = [{"op": f"op{i}", "calls": 1, "ms": float(i)} for i in range(1, 21)]
    table = shares(rows, top=3)
    assert [r["op"] for r in table[:3]] == ["op20", "op19", "op18"]
    assert table[-1]["op"] == "other (17 ops)" and table[-1]["calls"] == 17
    assert abs(sum(r["share"] for r in table) - 1.0) < 1e-12
