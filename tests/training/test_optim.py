"""svd_ms.training.optim: AdamW against torch.optim.AdamW (the update the trainer promises), the
learning-rate schedule, and the gradient helpers (norm, scaling, buckets, all-reduce)."""
import math

import mindspore as ms
import numpy as np
import pytest
import torch
from conftest import assert_close
from mindspore import Parameter, Tensor

from svd_ms.training.optim import (
    AdamW,
    BucketAllReduce,
    buckets,
    global_norm,
    lr_schedule,
    scale_grads,
)


def test_adamw_matches_torch_over_several_steps():
    rng = np.random.default_rng(0)
    shapes = [(4, 3), (5,), (2, 2, 3)]
    start = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    grads = [[rng.standard_normal(s).astype(np.float32) for s in shapes] for _ in range(4)]
    rates = [1e-2, 5e-3, 2e-3, 1e-3]
    betas, eps, decay = (0.9, 0.99), 1e-6, 0.05

    ours = [Parameter(Tensor(a.copy()), name=f"p{i}") for i, a in enumerate(start)]
    optimizer = AdamW(ours, rates, betas=betas, eps=eps, weight_decay=decay)
    theirs = [torch.nn.Parameter(torch.from_numpy(a.copy())) for a in start]
    reference = torch.optim.AdamW(theirs, lr=rates[0], betas=betas, eps=eps, weight_decay=decay)
    for step, g in enumerate(grads):
        assert optimizer.current_lr() == rates[step]
        assert optimizer([Tensor(x) for x in g]) == rates[step]
        for group in reference.param_groups:
            group["lr"] = rates[step]
        for p, x in zip(theirs, g):
            p.grad = torch.from_numpy(x)
        reference.step()
    assert int(optimizer.step.asnumpy()) == 4
    moved = max(float(np.abs(p.asnumpy() - a).max()) for p, a in zip(ours, start))
    assert moved > 1e-3  # the steps changed the parameters, so the match below means something
    for i, (p, t) in enumerate(zip(ours, theirs)):
        assert_close(f"AdamW parameter {i} after 4 steps vs torch.optim.AdamW", p.asnumpy(), t.detach().numpy(),
                     rel=1e-5)


def test_adamw_keeps_the_last_rate_after_the_schedule():
    p = Parameter(Tensor(np.ones(2, np.float32)), name="p")
    optimizer = AdamW([p], [1e-3])
    optimizer([Tensor(np.ones(2, np.float32))])
    assert optimizer.current_lr() == 1e-3


def test_lr_schedule_warms_up_then_decays():
    rates = lr_schedule(20, 1e-3, warmup_steps=5, warmup_factor=0.1, name="cosine", min_lr=1e-5)
    assert len(rates) == 20
    assert rates[0] == pytest.approx(1e-4, rel=1e-6)           # warm-up starts at lr * warmup_factor
    assert all(a < b for a, b in zip(rates[:5], rates[1:6]))   # rises through the warm-up
    assert max(rates) == pytest.approx(1e-3, rel=1e-6)
    tail = rates[5:]
    assert all(a >= b for a, b in zip(tail, tail[1:]))         # then never rises
    assert tail[-1] < 2e-4 and min(rates) >= 1e-5 - 1e-12
    constant = lr_schedule(6, 2e-4, name="constant")
    assert constant == pytest.approx([2e-4] * 6)
    with pytest.raises(ValueError, match="lr_schedule.name"):
        lr_schedule(5, 1e-3, name="step")


def test_buckets_cover_every_gradient_once():
    grads = [np.zeros(n) for n in (3, 4, 10, 1, 1)]
    ranges = list(buckets(grads, 7))
    assert ranges == [(0, 2), (2, 3), (3, 5)]  # the 10-value tensor makes a bucket of its own
    assert [i for a, b in ranges for i in range(a, b)] == list(range(len(grads)))


def test_global_norm_in_buckets_is_the_l2_norm():
    rng = np.random.default_rng(1)
    arrays = [rng.standard_normal(s).astype(np.float32) for s in ((3, 4), (7,), (2, 5))]
    want = math.sqrt(sum(float((a.astype(np.float64) ** 2).sum()) for a in arrays))
    for bucket in (1, 12, 10_000):
        assert global_norm([Tensor(a) for a in arrays], bucket_elems=bucket) == pytest.approx(want, rel=1e-6)
    arrays[1][2] = np.inf
    assert math.isinf(global_norm([Tensor(a) for a in arrays]))
    half = global_norm([Tensor(a.astype(np.float16)) for a in arrays[:1]])
    assert half == pytest.approx(math.sqrt(float((arrays[0].astype(np.float16).astype(np.float64) ** 2).sum())),
                                 rel=1e-3)


def test_scale_grads():
    g = [Tensor(np.array([1.0, -2.0], np.float32)), Tensor(np.array([4.0], np.float16))]
    scaled = scale_grads(g, 0.5)
    assert scaled[0].asnumpy().tolist() == [0.5, -1.0] and scaled[1].asnumpy().tolist() == [2.0]
    assert scaled[1].dtype == ms.float16
    assert scale_grads(g, 1.0) == g


def test_bucket_allreduce_averages_and_splits_back(monkeypatch):
    g = [Tensor(np.arange(6, dtype=np.float32).reshape(2, 3)), Tensor(np.array([1.0, 3.0], np.float16))]
    single = BucketAllReduce(world_size=1)
    assert single(g) == g
    assert single.reduce_vector([1.0, 2.0]).tolist() == [1.0, 2.0]

    pair = BucketAllReduce(world_size=2, bucket_mb=4 / (1024 * 1024))  # 1-value buckets: one per tensor
    seen = []

    def allreduce_of_two_ranks(flat):  # the other rank sent 3x this rank's values
        seen.append(flat.shape)
        return flat * 4
    monkeypatch.setattr(pair, "_allreduce", allreduce_of_two_ranks)
    out = pair(g)
    assert seen == [(6,), (2,)]
    assert out[0].shape == (2, 3) and out[0].asnumpy().tolist() == (np.arange(6).reshape(2, 3) * 2).tolist()
    assert out[1].dtype == ms.float16 and out[1].asnumpy().tolist() == [2.0, 6.0]
