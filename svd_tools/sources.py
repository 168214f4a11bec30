"""Readers for the checkpoint files users bring, one tensor at a time.

Every reader exposes the same small interface:

* ``keys()``: tensor names in file order,
* ``info(key)``: ``(shape, dtype_name)`` without reading any tensor data,
* ``read(key)``: the tensor as a numpy array (bfloat16 comes back as float32 unless
  ``raw_bf16=True``, in which case the uint16 bit patterns are returned),
* ``close()``.

The safetensors reader and format detection are the engine's own (svd_ms.checkpoint, whose
readers.py describes the interface); this module adds what only the converter reads: sharded
safetensors and torch pickles. Errors a
user can cause are raised as svd_ms.errors.CheckpointError with a one-line message.
"""
import json
import os

import numpy as np

from svd_ms.checkpoint import (MINDSPORE, SAFETENSORS, SAFETENSORS_INDEX, TORCH, SafetensorsReader, checkpoint_format,
                               quote_path, short_reason, sniff_format)
from svd_ms.errors import CheckpointError


class ShardedSafetensorsSource:
    """Several safetensors files joined by a ``*.safetensors.index.json`` weight map."""

    def __init__(self, index_path: str):
        self.path = index_path
        try:
            with open(index_path, "r", encoding="utf-8") as f:
                weight_map = json.load(f)["weight_map"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"{quote_path(index_path)} is not a safetensors index ({short_reason(exc)})") from None
        folder = os.path.dirname(index_path)
        self._shards = {}
        self._where = {}
        for name, shard in weight_map.items():
            if shard not in self._shards:
                self._shards[shard] = SafetensorsReader(os.path.join(folder, shard))
            self._where[name] = self._shards[shard]

    def keys(self):
        return list(self._where)

    def info(self, key):
        return self._where[key].info(key)

    def read(self, key, raw_bf16: bool = False):
        return self._where[key].read(key, raw_bf16=raw_bf16)

    def close(self):
        for shard in self._shards.values():
            shard.close()


class TorchSource:
    """A torch pickle (``.ckpt``, ``.pt``, ``.pth``, ``.bin``), possibly ``{"state_dict": ...}``.

    Loaded with ``weights_only=True`` (no arbitrary code runs) and memory-mapped where the
    file format allows it, so tensors are paged in as they are read.
    """

    def __init__(self, path: str):
        self.path = path
        try:
            import torch
        except ImportError:
            raise CheckpointError(
                f"{quote_path(path)} is a torch pickle and reading it needs PyTorch: `pip install torch`, "
                "or convert the .safetensors release of the same weights instead"
            ) from None
        self._torch = torch
        try:
            self._mmapped = False
            try:
                obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
                self._mmapped = True
            except RuntimeError as exc:  # the legacy (non-zip) format cannot be memory-mapped
                if "mmap" not in str(exc):
                    raise
                obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises many kinds (UnpicklingError, RuntimeError, EOFError, ...)
            raise CheckpointError(f"{quote_path(path)} is not a readable torch checkpoint ({short_reason(exc)})") from None
        if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
            obj = obj["state_dict"]
        if not isinstance(obj, dict) or not obj:
            raise CheckpointError(f"{quote_path(path)} holds no state dict (found {type(obj).__name__})")
        bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
        if bad:
            raise CheckpointError(f"{quote_path(path)} is not a state dict of tensors (e.g. entry {bad[0]!r})")
        self._sd = obj

    def keys(self):
        return list(self._sd)

    def info(self, key):
        t = self._sd[key]
        name = str(t.dtype).replace("torch.", "")
        return tuple(t.shape), name

    def read(self, key, raw_bf16: bool = False):
        t = self._sd[key].detach()
        if t.dtype == self._torch.bfloat16:
            if raw_bf16:
                return t.contiguous().view(self._torch.int16).numpy().view(np.uint16)
            return t.float().numpy()
        return t.contiguous().numpy()

    def release(self, key):
        """Drop the pages of a memory-mapped tensor from the resident set once it is written
        (they are re-read from the file if ever touched again).  Only for a file mapping:
        on ordinary memory the same call would discard data."""
        if not self._mmapped:
            return
        try:
            storage = self._sd[key].untyped_storage()
            _drop_pages(storage.data_ptr(), storage.nbytes())
        except Exception:
            pass

    def close(self):
        self._sd = None


def _drop_pages(address: int, length: int):
    """madvise(MADV_DONTNEED) on the whole pages inside [address, address + length)."""
    import ctypes
    import mmap

    if not length or not hasattr(mmap, "MADV_DONTNEED"):
        return
    page = mmap.PAGESIZE
    start = -(-address // page) * page
    stop = ((address + length) // page) * page
    if stop > start:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.madvise(ctypes.c_void_p(start), ctypes.c_size_t(stop - start), mmap.MADV_DONTNEED)


def open_file_source(path: str):
    kind = checkpoint_format(path)
    if kind == SAFETENSORS_INDEX:
        return ShardedSafetensorsSource(path)
    if kind == SAFETENSORS:
        return SafetensorsReader(path)
    if kind == TORCH:
        return TorchSource(path)
    if kind == MINDSPORE and sniff_format(path) is None:  # named .ckpt, but neither format's bytes
        raise CheckpointError(f"{quote_path(path)} is not a torch checkpoint (unrecognised content)")
    what = "a MindSpore .ckpt already" if kind == MINDSPORE else "a diffusers folder"
    raise CheckpointError(f"{quote_path(path)} is {what}, not a file to convert: expected .safetensors or a torch "
                          ".ckpt/.pt/.pth/.bin")
