"""Optimizer and gradient helpers for the train step (PyNative, no graph compilation).

`AdamW` has torch.optim.AdamW's update (bias-corrected moments, decoupled weight decay) and
runs one fused MindSpore `AdamWeightDecay` kernel per parameter, with the bias corrections
folded into that kernel's learning rate, epsilon and decay. mindone's `create_optimizer`
optimizers compile their update as a graph, which costs minutes on a CPU before the first
step; they remain available (train.optimizer.name: "mindone:<name>").
"""
import math
from typing import List, Sequence

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, nn, ops


def lr_schedule(max_steps: int, lr: float, warmup_steps: int = 0, warmup_factor: float = 0.0,
                name: str = "cosine", min_lr: float = 0.0) -> List[float]:
    """Per-update learning rates (mindone's scheduler): linear warm-up from lr * warmup_factor
    to lr over `warmup_steps`, then cosine decay to `min_lr` (or constant) until `max_steps`."""
    from mindone.trainers import create_scheduler

    if name not in ("cosine", "constant"):
        raise ValueError(f"train.lr_schedule.name must be 'cosine' or 'constant', got '{name}'")
    warmup_steps = min(int(warmup_steps), max_steps)
    main = max_steps - warmup_steps
    values = create_scheduler(steps_per_epoch=1, name="cosine_decay" if name == "cosine" else "constant",
                              lr=lr, end_lr=min_lr, warmup_steps=warmup_steps, warmup_factor=warmup_factor,
                              decay_steps=max(main, 1), total_steps=max_steps)
    return [float(v) for v in values[:max_steps]]


class AdamW(nn.Cell):
    def __init__(self, params: Sequence[Parameter], learning_rates: Sequence[float], betas=(0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.01):
        super().__init__()
        self.parameters = ms.ParameterTuple(params)
        self.exp_avg = self.parameters.clone(prefix="exp_avg", init="zeros")
        self.exp_avg_sq = self.parameters.clone(prefix="exp_avg_sq", init="zeros")
        self.step = Parameter(Tensor(0, ms.int32), name="step", requires_grad=False)
        self.learning_rates = [float(v) for v in learning_rates]
        self.beta1, self.beta2 = float(betas[0]), float(betas[1])
        self.eps = float(eps)
        self.weight_decay = float(weight_decay)
        self._kernel = ops.AdamWeightDecay()

    def current_lr(self) -> float:
        """The rate the next update uses."""
        index = min(int(self.step.asnumpy()), len(self.learning_rates) - 1)
        return self.learning_rates[index]

    def construct(self, grads):
        lr = self.current_lr()
        t = int(self.step.asnumpy()) + 1
        bc1, bc2 = 1.0 - self.beta1 ** t, 1.0 - self.beta2 ** t
        # torch: p <- p (1 - lr wd) - lr/bc1 * m / (sqrt(v / bc2) + eps); the fused kernel does
        # p <- p - lr' (m / (sqrt(v) + eps') + wd' p), which is the same update for:
        lr_k = lr * math.sqrt(bc2) / bc1
        scalars = [Tensor(v, ms.float32) for v in (lr_k, self.beta1, self.beta2, self.eps * math.sqrt(bc2),
                                                   self.weight_decay * bc1 / math.sqrt(bc2))]
        for param, m, v, grad in zip(self.parameters, self.exp_avg, self.exp_avg_sq, grads):
            self._kernel(param, m, v, *scalars, grad if grad.dtype == param.dtype else ops.cast(grad, param.dtype))
        self.step.set_data(Tensor(t, ms.int32))
        return lr


class MindoneOptimizer:
    """Adapter for an optimizer from mindone.trainers.create_optimizer (graph compiled)."""

    def __init__(self, name: str, params, learning_rates, betas, eps, weight_decay):
        from mindone.trainers import create_optimizer

        self.learning_rates = list(learning_rates)
        self.optimizer = create_optimizer(list(params), name=name, lr=self.learning_rates, betas=list(betas),
                                          eps=eps, weight_decay=weight_decay, group_strategy="not_grouping")

    def current_lr(self) -> float:
        index = min(int(self.optimizer.global_step.asnumpy().reshape(-1)[0]), len(self.learning_rates) - 1)
        return self.learning_rates[index]

    def __call__(self, grads):
        lr = self.current_lr()
        self.optimizer(tuple(grads))
        return lr

    def parameters_and_names(self):
        return self.optimizer.parameters_and_names()


def optimizer_state(optimizer, model_param_ids) -> List:
    """(name, Parameter) of the optimizer's own state: everything but the model's parameters."""
    return [(name, p) for name, p in optimizer.parameters_and_names() if id(p) not in model_param_ids]


def buckets(grads, max_elems: int):
    """Consecutive (start, end) ranges of `grads` holding at most `max_elems` values each (a
    single larger tensor makes a bucket of its own)."""
    start = 0
    while start < len(grads):
        end, size = start, 0
        while end < len(grads) and (end == start or size + grads[end].size <= max_elems):
            size += grads[end].size
            end += 1
        yield start, end
        start = end


def global_norm(grads, bucket_elems: int = 16 * 1024 * 1024) -> float:
    """L2 norm over all gradients (inf or NaN when any value is), in float32 buckets."""
    total = 0.0
    for start, end in buckets(grads, bucket_elems):
        flat = ops.cat([ops.cast(g, ms.float32).reshape(-1) for g in grads[start:end]])
        total += float(ops.square(flat).sum().asnumpy())
    return float(np.sqrt(total))


def scale_grads(grads, factor: float):
    if factor == 1.0:
        return list(grads)
    f = Tensor(factor, ms.float32)
    return [g * ops.cast(f, g.dtype) for g in grads]


class BucketAllReduce:
    """Mean of the gradients over the data-parallel ranks: gradients are flattened into buckets
    of at most `bucket_mb` MB, each bucket is all-reduced once (one collective per bucket rather
    than per parameter), then split back."""

    def __init__(self, world_size: int, bucket_mb: float = 64.0):
        self.world_size = world_size
        self.bucket_elems = max(int(bucket_mb * 1024 * 1024 / 4), 1)
        self._allreduce = ops.AllReduce()

    def reduce_vector(self, values: np.ndarray) -> np.ndarray:
        """Sum of a small float64/float32 vector over the ranks (logging, data positions)."""
        if self.world_size == 1:
            return np.asarray(values, np.float32)
        return self._allreduce(Tensor(np.asarray(values, np.float32))).asnumpy()

    def __call__(self, grads):
        if self.world_size == 1:
            return list(grads)
        grads = list(grads)
        out = [None] * len(grads)
        for start, end in buckets(grads, self.bucket_elems):
            flat = ops.cat([ops.cast(g, ms.float32).reshape(-1) for g in grads[start:end]])
            flat = self._allreduce(flat) / self.world_size
            offset = 0
            for i in range(start, end):
                n = grads[i].size
                out[i] = ops.cast(flat[offset:offset + n].reshape(grads[i].shape), grads[i].dtype)
                offset += n
        return out
