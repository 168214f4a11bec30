"""LoRA adapters on the UNet's linear layers, for fine-tuning.

An adapter adds (alpha / rank) * up @ down @ x to a `Linear`'s output; `down` starts small and
random, `up` at zero, so training starts from the base model exactly (PEFT's initialisation).
The adapter is a child cell of the layer it adapts (`Linear.lora`), so the layer's own weight
keeps its name: checkpoints, the training state and the diffusers name map see the same names
with and without adapters.
"""
import re
from dataclasses import asdict, dataclass, field
from typing import Dict, Tuple

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, nn, ops

from ..errors import ConfigError
from ..modules.layers import Linear, linear

_PROJECTIONS = r"attn[12]\.(?:to_q|to_k|to_v|to_out\.0)"
_FEED_FORWARD = r"(?:ff|ff_in)\.net\.(?:0\.proj|0\.0|2)"
# Module-name patterns (below the UNet) of each target group. `transformer_blocks` are the
# spatial transformer blocks, `time_stack.<k>` the temporal ones (a resblock's time_stack has no
# attention or feed-forward, so it never matches).
TARGET_GROUPS = {
    "attn": rf"(?:transformer_blocks|time_stack)\.\d+\.{_PROJECTIONS}",
    "ff": rf"(?:transformer_blocks|time_stack)\.\d+\.{_FEED_FORWARD}",
    "temporal_attn": rf"time_stack\.\d+\.{_PROJECTIONS}",
    "temporal_ff": rf"time_stack\.\d+\.{_FEED_FORWARD}",
}


@dataclass(frozen=True)
class LoRASettings:
    rank: int = 16
    alpha: float = 16.0
    dropout: float = 0.0
    targets: Tuple[str, ...] = field(default=("attn",))

    @property
    def scaling(self) -> float:
        return float(self.alpha) / int(self.rank)

    @classmethod
    def from_config(cls, cfg) -> "LoRASettings":
        """From `train.lora` (a mapping); any bad value is a ConfigError naming the key."""
        values = dict(cfg or {})
        unknown = sorted(set(values) - {"rank", "alpha", "dropout", "targets"})
        if unknown:
            raise ConfigError(f"train.lora has unknown key '{unknown[0]}' (known: rank, alpha, dropout, targets)")
        rank = values.get("rank", cls.rank)
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
            raise ConfigError(f"train.lora.rank must be an integer >= 1, got {rank!r}")
        alpha = values.get("alpha", None)
        alpha = float(rank) if alpha is None else alpha
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha > 0:
            raise ConfigError(f"train.lora.alpha must be a number > 0, got {alpha!r}")
        dropout = values.get("dropout", cls.dropout)
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
            raise ConfigError(f"train.lora.dropout must be a number in [0, 1), got {dropout!r}")
        targets = values.get("targets", cls.targets)
        targets = [targets] if isinstance(targets, str) else list(targets or [])
        bad = [t for t in targets if t not in TARGET_GROUPS]
        if not targets or bad:
            raise ConfigError(f"train.lora.targets must be a list of {sorted(TARGET_GROUPS)}, got "
                              f"{bad[0] if bad else targets!r}")
        return cls(int(rank), float(alpha), float(dropout), tuple(dict.fromkeys(targets)))

    def as_dict(self) -> Dict:
        d = asdict(self)
        d["targets"] = list(self.targets)
        return d


def target_layers(unet: nn.Cell, targets) -> Dict[str, Linear]:
    """{module name below the UNet: Linear} of the layers the target groups select, in order."""
    pattern = re.compile(r"(?:^|\.)(?:" + "|".join(TARGET_GROUPS[t] for t in targets) + r")$")
    return {name: cell for name, cell in unet.cells_and_names()
            if isinstance(cell, Linear) and pattern.search(name)}


class LoRAAdapter(nn.Cell):
    """scaling * up @ down @ dropout(x), in the adapted layer's compute dtype (float32 master
    weights cast per call, like the layer's own weight)."""

    def __init__(self, down: np.ndarray, up: np.ndarray, scaling: float, dropout: float = 0.0):
        super().__init__()
        self.down = Parameter(Tensor(np.asarray(down, np.float32)), name="down")
        self.up = Parameter(Tensor(np.asarray(up, np.float32)), name="up")
        self.rank = int(down.shape[0])
        self.scaling = float(scaling)
        self.dropout = float(dropout)

    def construct(self, x, dtype):
        if self.dropout > 0 and self.training:
            x = ops.dropout(x, p=self.dropout)
        h = linear(x, ops.cast(self.down, dtype))
        return linear(h, ops.cast(self.up, dtype)) * self.scaling


def attach_adapters(unet: nn.Cell, settings: LoRASettings, seed: int = 0, prefix: str = "") -> Dict[str, LoRAAdapter]:
    """Attach a fresh adapter to every target layer of `unet`; returns {module name: adapter}.

    `down` is drawn from U(-1/sqrt(in), 1/sqrt(in)) (PEFT's kaiming-uniform with a = sqrt(5))
    by a generator seeded with (seed, layer index), so every data-parallel rank starts equal.
    The adapter's parameters are named `<prefix><module>.lora.down` / `.lora.up`.
    """
    layers = target_layers(unet, settings.targets)
    if not layers:
        raise ConfigError(f"train.lora.targets {list(settings.targets)} select no layer of this UNet")
    adapters = {}
    for index, (name, layer) in enumerate(layers.items()):
        if layer.lora is not None:
            raise ConfigError(f"layer '{name}' already has a LoRA adapter")
        rng = np.random.default_rng([int(seed), index])
        bound = 1.0 / np.sqrt(layer.in_features)
        down = rng.uniform(-bound, bound, (settings.rank, layer.in_features)).astype(np.float32)
        up = np.zeros((layer.out_features, settings.rank), np.float32)
        adapter = LoRAAdapter(down, up, settings.scaling, settings.dropout)
        layer.lora = adapter
        adapter.down.name = f"{prefix}{name}.lora.down"
        adapter.up.name = f"{prefix}{name}.lora.up"
        adapter.set_train(layer.training)
        adapters[name] = adapter
    return adapters


def adapter_parameters(adapters: Dict[str, LoRAAdapter]):
    return [p for adapter in adapters.values() for p in (adapter.down, adapter.up)]


def set_adapter_weights(adapter: LoRAAdapter, down: np.ndarray, up: np.ndarray):
    adapter.down.set_data(Tensor(np.asarray(down, np.float32), ms.float32))
    adapter.up.set_data(Tensor(np.asarray(up, np.float32), ms.float32))
