"""Random weights for the untrained demo and for tests that need a model without a checkpoint."""
import math

import mindspore as ms
import numpy as np


def randomize(network, seed: int = 0) -> None:
    """Fill every parameter with deterministic random values of a sensible scale: matrices and
    kernels ~ N(0, 1/fan_in), vectors (biases, norm shifts) small, norm scales and mix factors 1 or 0."""
    rng = np.random.default_rng(seed)
    for name, param in network.parameters_and_names():
        shape = tuple(param.shape)
        leaf = name.rsplit(".", 1)[-1]
        if len(shape) >= 2:
            fan_in = int(np.prod(shape[1:]))
            value = rng.standard_normal(shape) / math.sqrt(fan_in)
        elif leaf == "weight" and ("norm" in name or ".ln" in name or "in_layers.0" in name
                                   or "out_layers.0" in name or name.endswith("out.0.weight")):
            value = np.ones(shape)
        elif leaf == "mix_factor":
            value = np.zeros(shape)
        else:
            value = 0.02 * rng.standard_normal(shape)
        param.set_data(ms.Tensor(value.astype(np.float32), param.dtype))
