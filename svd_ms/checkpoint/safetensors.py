"""THE safetensors reader: every caller (the engine's loader, the converter, LoRA files, UNet-only
weights) reads .safetensors through SafetensorsReader.

It reads every dtype the format defines that numpy can hold, and bfloat16, which numpy cannot:
its raw 16-bit words are read straight from the file and widened to float32 (or handed back as
the bits with raw_bf16=True, for writers that keep bfloat16). Whether a file is safetensors is
decided by its content (svd_ms.checkpoint.formats), never by its name.
"""
import json
import os
import struct
from typing import Dict, List, Tuple

import numpy as np

from ..errors import CheckpointError
from .formats import MAX_SAFETENSORS_HEADER, quote_path, short_reason

# safetensors dtype tag -> numpy dtype name ("bfloat16" has no numpy dtype)
SAFETENSORS_DTYPES = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
    "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8",
    "U8": "uint8", "U16": "uint16", "U32": "uint32", "U64": "uint64", "BOOL": "bool",
}
# numpy dtype name -> safetensors dtype tag, for the writers
SAFETENSORS_TAGS = {name: tag for tag, name in SAFETENSORS_DTYPES.items()}

# safetensors memory-maps the file; pages it has touched count in the process's resident set
# until the mapping goes away. Re-opening after this many bytes keeps that bounded.
REOPEN_BYTES = 256 * 1024 * 1024


def bf16_to_f32(bits: np.ndarray) -> np.ndarray:
    """numpy has no bfloat16: widen the raw 16-bit words to float32 (bf16 is fp32's top half)."""
    return (bits.astype(np.uint32) << 16).view(np.float32)


def itemsize(dtype: str) -> int:
    """Bytes per element of a numpy dtype name, "bfloat16" included."""
    return 2 if dtype == "bfloat16" else np.dtype(dtype).itemsize


def read_safetensors_header(path: str, label: str = "checkpoint"):
    """(entries, metadata, data_start) of a .safetensors file, validated against its size:
    entries = {name: (shape, numpy dtype name, begin, end)} with offsets relative to data_start."""
    size = os.path.getsize(path)
    bad = f"{label} {quote_path(path)} is not a readable safetensors file"
    with open(path, "rb") as f:
        first = f.read(8)
        if len(first) < 8:
            raise CheckpointError(f"{bad} (only {size} bytes)")
        (header_len,) = struct.unpack("<Q", first)
        if header_len > min(MAX_SAFETENSORS_HEADER, size - 8):
            raise CheckpointError(f"{bad} (no valid header)")
        try:
            header = json.loads(f.read(header_len))
        except (UnicodeDecodeError, ValueError):
            raise CheckpointError(f"{bad} (header is not JSON)") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{bad} (header is not a table)")
    metadata = header.pop("__metadata__", None) or {}
    entries: Dict[str, Tuple[Tuple[int, ...], str, int, int]] = {}
    end = 0
    try:
        for name, entry in header.items():
            begin, stop = (int(x) for x in entry["data_offsets"])
            if entry["dtype"] not in SAFETENSORS_DTYPES:
                raise CheckpointError(f"{label} {quote_path(path)}: tensor {name} has dtype {entry['dtype']}, "
                                      "which cannot be read")
            shape = tuple(int(d) for d in entry["shape"])
            entries[name] = (shape, SAFETENSORS_DTYPES[entry["dtype"]], begin, stop)
            end = max(end, stop)
    except (KeyError, TypeError, ValueError, AttributeError):
        raise CheckpointError(f"{bad} (malformed header)") from None
    data_start = 8 + header_len
    if data_start + end > size:
        raise CheckpointError(f"{label} {quote_path(path)} is truncated: its header describes {data_start + end} "
                              f"bytes, the file has {size}")
    return entries, metadata, data_start


class SafetensorsReader:
    """A .safetensors file: keys() in file order, info(key) -> (shape, dtype name), read(key),
    metadata (the header's string table), close(). bfloat16 is read as raw bits and widened
    unless raw_bf16=True; other dtypes go through safetensors' numpy API, re-opened every
    REOPEN_BYTES so that the mapped pages do not pile up in the resident set. `label` names the
    file in messages ("checkpoint", "LoRA file", ...)."""

    def __init__(self, path, label: str = "checkpoint"):
        from safetensors import SafetensorError, safe_open

        self.path = os.fspath(path)
        self.label = label
        self._entries, self.metadata, self._data_start = read_safetensors_header(self.path, label)
        self._safe_open = safe_open
        self._errors = (SafetensorError, OSError, ValueError)
        self._handle = None
        self._since_open = 0
        self._open()  # safetensors validates the header against the file once more
        self._ordered = sorted(self._entries, key=lambda k: self._entries[k][2])

    def _open(self):
        self.close()
        try:
            self._handle = self._safe_open(self.path, framework="np")
            self._handle.__enter__()
        except self._errors as exc:
            raise CheckpointError(f"{self.label} {quote_path(self.path)} is not a readable safetensors file "
                                  f"({short_reason(exc)})") from None
        self._since_open = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def keys(self) -> List[str]:
        return list(self._ordered)

    def info(self, key):
        shape, dtype, _, _ = self._entries[key]
        return shape, dtype

    def read(self, key, raw_bf16: bool = False) -> np.ndarray:
        shape, dtype, begin, stop = self._entries[key]
        if dtype == "bfloat16":
            bits = np.empty(shape, dtype=np.uint16)
            with open(self.path, "rb") as f:
                f.seek(self._data_start + begin)
                if f.readinto(memoryview(bits.reshape(-1)).cast("B")) != stop - begin:
                    raise CheckpointError(f"{self.label} {quote_path(self.path)} is truncated at {key!r}")
            return bits if raw_bf16 else bf16_to_f32(bits)
        if self._handle is None or self._since_open >= REOPEN_BYTES:
            self._open()
        self._since_open += stop - begin
        try:
            return self._handle.get_tensor(key)
        except self._errors as exc:
            raise CheckpointError(f"{self.label} {quote_path(self.path)} is truncated or corrupt at {key!r} "
                                  f"({short_reason(exc)})") from None

    def close(self):
        if self._handle is not None:
            try:
                self._handle.__exit__(None, None, None)
            finally:
                self._handle = None
