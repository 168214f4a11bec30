"""The one seed rule of svd-ms, used by the CLI, the Python API, the web page and the batch job.

A seed is an integer in [0, 2**32). When the user gives none, one is drawn here and recorded in
the result (and the sidecar), so every video can be made again. The image at position i of a
batch uses base + i (mod 2**32); clip k of a chained video uses `clip_seed(seed, k)`. The noise of
one video comes from numpy's `default_rng(seed)`, so it does not depend on the device.
"""
import secrets
from typing import Optional

import numpy as np

from .errors import ParamError

SEED_MOD = 2**32


def check_seed(seed, name: str = "seed") -> int:
    """`seed` as an int, or a one-line ParamError naming `name`."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= int(seed) < SEED_MOD:
        raise ParamError(name, f"{name}={seed!r} must be an integer between 0 and {SEED_MOD - 1}")
    return int(seed)


def draw_seed() -> int:
    """A fresh random seed, for a run whose user gave none."""
    return secrets.randbelow(SEED_MOD)


def resolve_seed(seed: Optional[int], name: str = "seed") -> int:
    """The seed a run uses: the user's (checked), or a drawn one."""
    return draw_seed() if seed is None else check_seed(seed, name)


def offset_seed(base: int, index: int) -> int:
    """The seed of item `index` of a batch started at `base` (wraps at 2**32)."""
    return (int(base) + int(index)) % SEED_MOD


def clip_seed(seed: int, index: int) -> int:
    """The seed of clip `index` of a chain seeded `seed`. Clip 0 uses the seed itself, so a one-clip
    chain is the ordinary video; later clips take a hash of (seed, index), so they never coincide
    with a neighbouring image's base + i seeds."""
    if index == 0:
        return int(seed)
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0])


def noise_generator(seed: int) -> np.random.Generator:
    """The generator every noise draw of one video comes from."""
    return np.random.default_rng(int(seed))
