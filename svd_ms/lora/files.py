"""LoRA files: safetensors only (a pickle could run code), read into per-module (down, up, alpha).

Written by this project: `unet.<diffusers module>.lora_A.weight` (rank, in) and `.lora_B.weight`
(out, rank), the names diffusers saves and PEFT loads onto `UNetSpatioTemporalConditionModel`,
with the settings in the metadata: `format`, `rank`, `alpha`, `dropout`, `targets`,
`base_model`, `target_modules`, and diffusers' own `lora_adapter_metadata` (a LoraConfig's
`r`, `lora_alpha`, `target_modules`).
"""
import json
import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np

from ..checkpoint import SafetensorsReader, is_safetensors, quote_path
from ..errors import CheckpointError, LoRAError
from .names import UNetNames, split_key

FORMAT = "svd-ms-lora/1"


@dataclass
class ModuleDelta:
    """One module's adapter from a file: delta W = alpha / rank * up @ down."""
    module: str          # this UNet's module name
    key: str            # the file's name of the down tensor (for error messages)
    down: np.ndarray
    up: np.ndarray
    alpha: float

    @property
    def rank(self) -> int:
        return int(self.down.shape[0])

    @property
    def scaling(self) -> float:
        return self.alpha / self.rank


def read_safetensors(path: str) -> Tuple[Dict[str, np.ndarray], Dict[str, str]]:
    """(tensors, metadata) of a LoRA file, read by the project's one safetensors reader (so
    bfloat16 files are read too). Whether it is safetensors is decided by its content, whatever its
    name; anything else is refused unread, since a pickle could run code."""
    if not os.path.isfile(path):
        raise LoRAError(f"LoRA file {quote_path(path)} does not exist")
    try:
        if not is_safetensors(path):
            raise LoRAError(f"LoRA file {quote_path(path)} is not a safetensors file (pickled files are not read: "
                            "they can run code)")
        with SafetensorsReader(path, label="LoRA file") as reader:
            return {key: reader.read(key) for key in reader.keys()}, dict(reader.metadata)
    except LoRAError:
        raise
    except CheckpointError as exc:  # the reader's one-line message, already naming the LoRA file
        raise LoRAError(str(exc)) from None


def _metadata_alpha(metadata: Dict[str, str]) -> Optional[float]:
    """The file-wide alpha from our metadata or diffusers' lora_adapter_metadata, if any."""
    try:
        if "alpha" in metadata:
            return float(metadata["alpha"])
        if "lora_adapter_metadata" in metadata:
            packed = json.loads(metadata["lora_adapter_metadata"])
            for key in ("lora_alpha", "unet.lora_alpha"):
                if key in packed:
                    return float(packed[key])
    except (ValueError, TypeError):
        return None
    return None


def read_lora(path: str, names: UNetNames) -> List[ModuleDelta]:
    """Every module adapter of a LoRA file, named as this UNet's modules. A name that is not a
    LoRA tensor, a module this UNet lacks, or an incomplete down/up pair is a LoRAError naming
    the first such tensor."""
    tensors, metadata = read_safetensors(path)
    if not tensors:
        raise LoRAError(f"LoRA file '{path}' holds no tensors")
    file_alpha = _metadata_alpha(metadata)
    parts: Dict[str, Dict[str, Tuple[str, np.ndarray]]] = {}
    for key in tensors:  # file order: the first mismatch is the first in the file
        split = split_key(key)
        if split is None:
            raise LoRAError(f"LoRA file '{path}': '{key}' is not a LoRA tensor name (expected lora_A/lora_B, "
                            f"lora.down/lora.up, lora_down/lora_up or alpha)")
        module, role = split
        ours = names.to_ours(module)
        if ours is None:
            raise LoRAError(f"LoRA file '{path}': '{key}' names no layer of this model's UNet "
                            f"(module '{module}')")
        slot = parts.setdefault(ours, {})
        if role in slot:
            raise LoRAError(f"LoRA file '{path}': '{key}' and '{slot[role][0]}' are the same tensor of module '{ours}'")
        slot[role] = (key, tensors[key])
    deltas = []
    for module, slot in parts.items():
        if "down" not in slot or "up" not in slot:
            have = next(iter(slot.values()))[0]
            raise LoRAError(f"LoRA file '{path}': '{have}' has no matching "
                            f"{'up (lora_B)' if 'down' in slot else 'down (lora_A)'} tensor")
        down, up = (np.asarray(slot[r][1]) for r in ("down", "up"))
        if down.dtype.kind != "f" or up.dtype.kind != "f":
            raise LoRAError(f"LoRA file '{path}': '{slot['down'][0]}' is not a float tensor")
        rank = down.shape[0] if down.ndim else 0
        if down.ndim < 2 or up.ndim < 2 or up.shape[1] != rank or any(s != 1 for s in up.shape[2:]):
            raise LoRAError(f"LoRA file '{path}': '{slot['down'][0]}' {tuple(down.shape)} and its up tensor "
                            f"{tuple(up.shape)} are not a rank-r pair")
        if "alpha" in slot:
            alpha = float(np.asarray(slot["alpha"][1]).reshape(-1)[0])
        else:
            alpha = file_alpha if file_alpha is not None else float(rank)  # diffusers' default: scaling 1
        deltas.append(ModuleDelta(module, slot["down"][0], down.astype(np.float32),
                                  up.reshape(up.shape[:2]).astype(np.float32), alpha))
    return deltas


def write_lora(path: str, tensors: Dict[str, Tuple[np.ndarray, np.ndarray]], rank: int, alpha: float,
               extra: Optional[Dict] = None):
    """Write {diffusers module: (down, up)} to `path` (via a temporary name, then renamed)."""
    from safetensors.numpy import save_file

    state = {}
    for module, (down, up) in tensors.items():
        state[f"unet.{module}.lora_A.weight"] = np.ascontiguousarray(down, np.float32)
        state[f"unet.{module}.lora_B.weight"] = np.ascontiguousarray(up, np.float32)
    modules = list(tensors)
    metadata = {"format": FORMAT, "rank": str(int(rank)), "alpha": repr(float(alpha)),
                "target_modules": json.dumps(modules),
                "lora_adapter_metadata": json.dumps({"unet.r": int(rank), "unet.lora_alpha": float(alpha),
                                                     "unet.target_modules": modules})}
    for key, value in (extra or {}).items():
        metadata[key] = value if isinstance(value, str) else json.dumps(value)
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        save_file(state, tmp, metadata=metadata)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def read_metadata(path: str) -> Dict[str, str]:
    return read_safetensors(path)[1]
