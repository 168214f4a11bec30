"""Readers for the checkpoint files users bring, one tensor at a time.

Every reader exposes the same small interface:

* ``keys()``: tensor names in file order,
* ``info(key)``: ``(shape, dtype_name)`` without reading any tensor data,
* ``read(key)``: the tensor as a numpy array (bfloat16 comes back as float32 unless
  ``raw_bf16=True``, in which case the uint16 bit patterns are returned),
* ``close()``.

Errors a user can cause (not a checkpoint, truncated, unreadable) are raised as
``SourceError`` with a one-line message.
"""
import json
import os
import struct

import numpy as np

# safetensors dtype tag -> numpy dtype name ("bfloat16" has no numpy dtype)
_ST_DTYPES = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U8": "uint8",
    "U16": "uint16",
    "U32": "uint32",
    "U64": "uint64",
    "BOOL": "bool",
}

_MAX_HEADER = 100 * 1024 * 1024

# safetensors memory-maps the file; pages it has touched count in the process's resident set
# until the mapping goes away.  Re-opening after this many bytes keeps that bounded.
REOPEN_BYTES = 256 * 1024 * 1024


class SourceError(Exception):
    """The input cannot be read as a checkpoint; the message is one line."""


def bf16_to_f32(bits: np.ndarray) -> np.ndarray:
    return (bits.astype(np.uint32) << 16).view(np.float32)


def _short(exc: BaseException, limit: int = 160) -> str:
    text = str(exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    if len(line) > limit:
        cut = line.find(". ")
        line = line[: cut + 1] if 0 < cut < limit else line[: limit - 3] + "..."
    return line


class SafetensorsSource:
    """A ``.safetensors`` file, read through safetensors' numpy API.

    The header is parsed here as well (it is a JSON document behind an 8-byte length) so that
    shapes and dtypes are known before anything is read, and so that bfloat16 tensors, which
    numpy cannot represent, can be read as raw bits.

    safetensors reads through a memory map, and the pages it has read stay in the resident
    set while the file is open; the file is therefore re-opened every ``REOPEN_BYTES``, which
    keeps the resident set of a conversion near one tensor instead of the whole file.
    """

    def __init__(self, path: str):
        from safetensors import SafetensorError, safe_open

        self.path = path
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            first = f.read(8)
            if len(first) < 8:
                raise SourceError(f"{path} is not a safetensors checkpoint (only {size} bytes)")
            (header_len,) = struct.unpack("<Q", first)
            if header_len > min(_MAX_HEADER, size - 8):
                raise SourceError(f"{path} is not a safetensors checkpoint (no valid header)")
            try:
                header = json.loads(f.read(header_len))
            except (UnicodeDecodeError, ValueError):
                raise SourceError(f"{path} is not a safetensors checkpoint (header is not JSON)") from None
        if not isinstance(header, dict):
            raise SourceError(f"{path} is not a safetensors checkpoint (header is not a table)")
        self.metadata = header.pop("__metadata__", None) or {}
        self._data_start = 8 + header_len
        self._entries = {}
        end = 0
        try:
            for name, entry in header.items():
                begin, stop = (int(x) for x in entry["data_offsets"])
                if entry["dtype"] not in _ST_DTYPES:
                    raise SourceError(f"{path}: tensor {name} has dtype {entry['dtype']}, which cannot be converted")
                self._entries[name] = (tuple(int(d) for d in entry["shape"]), _ST_DTYPES[entry["dtype"]], begin, stop)
                end = max(end, stop)
        except (KeyError, TypeError, ValueError, AttributeError):
            raise SourceError(f"{path} is not a safetensors checkpoint (malformed header)") from None
        if self._data_start + end > size:
            raise SourceError(
                f"{path} is truncated: its header describes {self._data_start + end} bytes, the file has {size}"
            )
        self._safe_open = safe_open
        self._SafetensorError = SafetensorError
        self._handle = None
        self._since_open = 0
        # safetensors validates the header against the file once more (offsets, coverage).
        self._open()
        self._ordered = sorted(self._entries, key=lambda k: self._entries[k][2])

    def _open(self):
        self.close()
        try:
            self._handle = self._safe_open(self.path, framework="np")
            self._handle.__enter__()
        except (self._SafetensorError, OSError, ValueError) as exc:
            raise SourceError(f"{self.path} is not a valid safetensors checkpoint ({_short(exc)})") from None
        self._since_open = 0

    def keys(self):
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
                    raise SourceError(f"{self.path} is truncated (tensor {key})")
            return bits if raw_bf16 else bf16_to_f32(bits)
        if self._handle is None or self._since_open >= REOPEN_BYTES:
            self._open()
        self._since_open += stop - begin
        try:
            return self._handle.get_tensor(key)
        except (self._SafetensorError, OSError, ValueError) as exc:
            raise SourceError(f"{self.path}: cannot read tensor {key} ({_short(exc)})") from None

    def close(self):
        if self._handle is not None:
            try:
                self._handle.__exit__(None, None, None)
            finally:
                self._handle = None


class ShardedSafetensorsSource:
    """Several safetensors files joined by a ``*.safetensors.index.json`` weight map."""

    def __init__(self, index_path: str):
        self.path = index_path
        try:
            with open(index_path, "r", encoding="utf-8") as f:
                weight_map = json.load(f)["weight_map"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise SourceError(f"{index_path} is not a safetensors index ({_short(exc)})") from None
        folder = os.path.dirname(index_path)
        self._shards = {}
        self._where = {}
        for name, shard in weight_map.items():
            if shard not in self._shards:
                self._shards[shard] = SafetensorsSource(os.path.join(folder, shard))
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
            raise SourceError(
                f"{path} is a torch pickle and reading it needs PyTorch: `pip install torch`, "
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
            raise SourceError(f"{path} is not a readable torch checkpoint ({_short(exc)})") from None
        if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
            obj = obj["state_dict"]
        if not isinstance(obj, dict) or not obj:
            raise SourceError(f"{path} holds no state dict (found {type(obj).__name__})")
        bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
        if bad:
            raise SourceError(f"{path} is not a state dict of tensors (e.g. entry {bad[0]!r})")
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


def sniff_kind(path: str) -> str:
    """'safetensors', 'torch' or 'unknown' from the first bytes of a file."""
    with open(path, "rb") as f:
        head = f.read(16)
    if len(head) >= 10:
        # safetensors: little-endian header length, then a JSON object.  Checked first: the
        # length's low byte may well be 0x80, which also starts a pickle.
        (n,) = struct.unpack("<Q", head[:8])
        if 2 <= n <= _MAX_HEADER and head[8:9] == b"{" and head[9:10] in (b'"', b"}", b" ", b"\n"):
            return "safetensors"
    if head[:4] == b"PK\x03\x04":
        return "torch"  # zip container (torch >= 1.6)
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "torch"  # legacy torch.save: a pickle, protocol 2 to 5
    return "unknown"


def open_file_source(path: str):
    ext = os.path.splitext(path)[1].lower()
    if path.endswith(".safetensors.index.json"):
        return ShardedSafetensorsSource(path)
    kind = sniff_kind(path)
    if kind == "safetensors" or (kind == "unknown" and ext == ".safetensors"):
        return SafetensorsSource(path)
    if kind == "torch":
        return TorchSource(path)
    with open(path, "rb") as f:
        first = f.read(1)
    if ext == ".ckpt" and first == b"\x0a":
        raise SourceError(f"{path} is not a torch checkpoint (it may already be a MindSpore .ckpt)")
    if ext in (".ckpt", ".pt", ".pth", ".bin"):
        raise SourceError(f"{path} is not a torch checkpoint (unrecognised content)")
    raise SourceError(f"{path} is not a checkpoint: expected .safetensors, a torch .ckpt/.pt, or a diffusers folder")
