"""Changing the merged LoRA files of a built model between runs, without rebuilding it.

A server keeps one model and serves requests that ask for different adapters. Before the first
merge it keeps a host copy of every weight a file touches (the base value, as loaded); switching
restores those weights and merges the new set with `merge_lora`, so the weights are those a
model built with `lora=` the new set would have: same base, same order, same float64 arithmetic.
"""
from typing import Dict, List, Sequence, Tuple

import numpy as np
from mindspore import Tensor

from .files import read_lora
from .merge import LoRASpec, _normalise, merge_lora, unet_of
from .names import UNetNames


class LoRASwitch:
    """The adapters merged into one model's UNet: `use(specs)` makes `specs` the merged set."""

    def __init__(self, model):
        self.unet = unet_of(model)
        self.active: List[Tuple[str, float]] = []
        self._base: Dict[str, np.ndarray] = {}  # parameter name -> its value before any merge

    def use(self, specs: Sequence[LoRASpec]) -> List[Dict]:
        """Merge exactly `specs` (paths, 'PATH:SCALE' or (path, scale)), replacing what an earlier
        call merged; the same set again changes nothing. A file that does not fit raises LoRAError
        and leaves the base weights, with nothing merged."""
        wanted = _normalise(specs) if specs else []
        if wanted == self.active:
            return [{"path": p, "scale": s, "unchanged": True} for p, s in wanted]
        params = dict(self.unet.parameters_and_names())
        names = UNetNames(params)
        try:
            for path, _ in wanted:  # remember the base of every weight the new set touches
                for delta in read_lora(path, names):
                    key = f"{delta.module}.weight"
                    if key in params and key not in self._base:
                        self._base[key] = params[key].asnumpy().copy()
            self._restore(params)
            records = merge_lora(self.unet, wanted) if wanted else []
        except BaseException:
            self._restore(params)
            raise
        self.active = wanted
        return records

    def _restore(self, params) -> None:
        for key, value in self._base.items():
            weight = params[key]
            weight.set_data(Tensor(value, weight.dtype))
        self.active = []
