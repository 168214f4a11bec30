"""svd_ms.training.optim: AdamW equals torch.optim.AdamW, the schedule warms up then decays,
and the gradient helpers (norm, scaling, buckets, single-rank reduce) do what they say."""
import math

import numpy as np
import pytest
from mindspore import Parameter, Tensor

from conftest import assert_close
from svd_ms.training.optim import (AdamW, BucketAllReduce, buckets, global_norm, lr_schedule, optimizer_state,
                                   scale_grads)


def test_adamw_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    init = [rng.standard_normal((4, 3)).astype(np.float32), rng.standard_normal(5).astype(np.float32)]
    grads = [[rng.standard_normal(v.shape).astype(np.float32) for v in init] for _ in range(3)]
    rates = [1e-2, 5e-3, 2e-3]
    ours = [Parameter(Tensor(v.copy()), name=f"p{i}") for i, v in enumerate(init)]
    opt = AdamW(ours, rates, betas=(0.9, 0.99), eps=1e-6, weight_decay=0.1)
    theirs = [torch.nn.Parameter(torch.from_numpy(v.copy())) for v in init]
    ref = torch.optim.AdamW(theirs, lr=rates[0], betas=(0.9, 0.99), eps=1e-6, weight_decay=0.1)
    for step, g in enumerate(grads):
        assert opt.current_lr() == rates[step]
        opt([Tensor(x) for x in g])
        for group in ref.param_groups:
            group["lr"] = rates[step]
        for p, x in zip(theirs, g):
            p.grad = torch.from_numpy(x)
        ref.step()
    for i, (a, b) in enumerate(zip(ours, theirs)):
        assert_close(f"AdamW param {i} after 3 steps vs torch", a.asnumpy(), b.detach().numpy(), max_abs=1e-6)
    assert int(opt.step.asnumpy()) == 3
    names = [n for n, _ in optimizer_state(opt, {id(p) for p in ours})]
    assert "step" in names and sum(n.startswith("exp_avg") for n in names) == 4 and len(names) == 5


def test_schedule_warms_up_then_decays():
    rates = lr_schedule(10, 1e-3, warmup_steps=2, warmup_factor=0.0, name="cosine", min_lr=1e-5)
    assert len(rates) == 10 and rates[0] == 0.0 and rates[2] == pytest.approx(1e-3)
    assert all(a > b for a, b in zip(rates[2:], rates[3:])) and rates[-1] >= 1e-5
    assert lr_schedule(4, 2e-4, name="constant") == [pytest.approx(2e-4)] * 4
    with pytest.raises(ValueError, match="cosine' or 'constant"):
        lr_schedule(4, 1e-3, name="linear")


def test_gradient_helpers():
    grads = [Tensor(np.full((2, 2), 3.0, np.float32)), Tensor(np.full(4, 4.0, np.float32))]
    assert global_norm(grads) == pytest.approx(math.sqrt(4 * 9 + 4 * 16))
    assert global_norm(grads, bucket_elems=3) == pytest.approx(10.0)
    assert not math.isfinite(global_norm([Tensor(np.array([1.0, np.inf], np.float32))]))
    halved = scale_grads(grads, 0.5)
    assert np.array_equal(halved[1].asnumpy(), np.full(4, 2.0, np.float32))
    assert list(buckets(grads, 4)) == [(0, 1), (1, 2)] and list(buckets(grads, 8)) == [(0, 2)]
    single = BucketAllReduce(1)
    assert single(grads)[0] is grads[0]
    assert np.array_equal(single.reduce_vector([1.0, 2.0]), np.array([1.0, 2.0], np.float32))
