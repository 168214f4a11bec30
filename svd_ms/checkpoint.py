"""Reading checkpoint files and loading them into the engine, one tensor at a time.

What a file is (`checkpoint_format`) is decided here and nowhere else; so are the safetensors
header, bfloat16 widening and the record layout of a MindSpore .ckpt. The converter
(svd_tools) reads its inputs through the same readers.

The engine's parameter names are the upstream checkpoint names, so the map from an upstream key
to a parameter is explicit and nearly the identity: `map_upstream_key` lists the exceptions,
namely the OpenCLIP text-tower remnants that SVD checkpoints carry but never use.

mindspore is imported only where tensors are handed to the engine: sniffing and reading files
stays cheap for the converter.
"""
import json
import os
import re
import struct
from typing import Dict, List, Optional, Tuple

import numpy as np

from .errors import CheckpointError, CheckpointMemoryError, CheckpointMismatchError

CONVERT_HINT = "python -m svd_tools.convert --pt_weights_file {path} --config CONFIG --out_dir DIR"

_TEXT_TOWER = re.compile(
    r"^conditioner\.embedders\.\d+\.open_clip\.model\."
    r"(token_embedding\.|positional_embedding$|ln_final\.|text_projection$|logit_scale$|transformer\.|attn_mask$)")


def quote_path(path) -> str:
    """A file name for a one-line message: quoted, control characters escaped."""
    return repr(os.fspath(path))


# ---------------------------------------------------------------------------------- names

def ignored_reason(key: str) -> Optional[str]:
    if _TEXT_TOWER.match(key):
        return "OpenCLIP text tower (SVD conditions on the image tower only)"
    return None


def map_upstream_key(key: str) -> Optional[str]:
    """Upstream checkpoint key -> engine parameter name, or None for keys on the ignore list."""
    if ignored_reason(key) is not None:
        return None
    return key


def _show(names, limit=5) -> str:
    names = sorted(names)
    more = f" (+{len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def check_names(expected: Dict[str, Tuple[int, ...]], found: Dict[str, Tuple[int, ...]], source: str = "checkpoint"):
    """`expected`: engine parameter shapes; `found`: checkpoint shapes keyed by *upstream* name."""
    mapped = {}
    for key, shape in found.items():
        name = map_upstream_key(key)
        if name is not None:
            mapped[name] = tuple(shape)
    missing = set(expected) - set(mapped)
    unexpected = set(mapped) - set(expected)
    mismatched = [f"{n} {mapped[n]} vs {tuple(expected[n])}" for n in set(expected) & set(mapped)
                  if tuple(mapped[n]) != tuple(expected[n])]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing: {_show(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected: {_show(unexpected)}")
    if mismatched:
        problems.append(f"{len(mismatched)} with the wrong shape (checkpoint vs model): {_show(mismatched)}")
    if problems:
        raise CheckpointMismatchError(f"{source} does not fit the config: " + "; ".join(problems))


# ---------------------------------------------------------------------------------- formats

SAFETENSORS = "safetensors"
SAFETENSORS_INDEX = "safetensors-index"
MINDSPORE = "mindspore"
TORCH = "torch"
DIFFUSERS_FOLDER = "diffusers-folder"

_MAX_HEADER = 100 * 1024 * 1024
_BY_EXTENSION = {".safetensors": SAFETENSORS, ".ckpt": MINDSPORE, ".pt": TORCH, ".pth": TORCH, ".bin": TORCH}


def _sniff(head: bytes) -> Optional[str]:
    """The format the first bytes of a file announce, or None."""
    if len(head) >= 10:
        # safetensors: a little-endian header length, then a JSON object. Checked first: the
        # length's low byte may well be 0x80, which also starts a pickle.
        (n,) = struct.unpack("<Q", head[:8])
        if 2 <= n <= _MAX_HEADER and head[8:9] == b"{" and head[9:10] in (b'"', b"}", b" ", b"\n"):
            return SAFETENSORS
    if head[:4] == b"PK\x03\x04":
        return TORCH  # torch.save's zip container (torch >= 1.6)
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return TORCH  # legacy torch.save: a pickle, protocol 2 to 5
    # A .ckpt record: field 1 (Checkpoint.value), its length, then field 1 (Value.tag).
    if head[:1] == b"\x0a":
        i = 1
        while i < len(head) and head[i] & 0x80:
            i += 1
        if i + 1 < len(head) and head[i + 1:i + 2] == b"\x0a":
            return MINDSPORE
    return None


def sniff_format(path) -> Optional[str]:
    """The format a regular file's first bytes announce, or None."""
    try:
        with open(path, "rb") as f:
            return _sniff(f.read(16))
    except OSError as exc:
        raise CheckpointError(f"checkpoint {quote_path(path)} cannot be read ({exc.strerror or exc})") from None


def checkpoint_format(path) -> str:
    """'safetensors', 'safetensors-index', 'mindspore', 'torch' or 'diffusers-folder'.

    Decided by content where the first bytes say it, by extension otherwise (so that a damaged
    file is reported by the reader of the format it claims). Anything else, a missing or
    unreadable path, a FIFO or a device, is a one-line CheckpointError naming the path."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CheckpointError(f"checkpoint {quote_path(path)} does not exist")
    if os.path.isdir(path):
        if os.path.isdir(os.path.join(path, "unet")) or os.path.isfile(os.path.join(path, "model_index.json")):
            return DIFFUSERS_FOLDER
        raise CheckpointError(f"checkpoint {quote_path(path)} is a directory, not a checkpoint file or a diffusers folder")
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {quote_path(path)} is not a regular file")
    if path.endswith(".safetensors.index.json"):
        return SAFETENSORS_INDEX
    if os.path.getsize(path) == 0:
        raise CheckpointError(f"checkpoint {quote_path(path)} is empty")
    kind = sniff_format(path) or _BY_EXTENSION.get(os.path.splitext(path)[1].lower())
    if kind is None:
        raise CheckpointError(f"checkpoint {quote_path(path)} is not a checkpoint: expected .safetensors, a MindSpore "
                              ".ckpt, a torch .ckpt/.pt/.pth/.bin or a diffusers folder")
    return kind


def engine_checkpoint_format(path) -> str:
    """The format of a file the engine loads directly ('safetensors' or 'mindspore'); any other
    checkpoint is a one-line CheckpointError saying how to convert it."""
    kind = checkpoint_format(path)
    if kind in (SAFETENSORS, MINDSPORE, DIFFUSERS_FOLDER):
        return kind
    what = {TORCH: "a PyTorch checkpoint", SAFETENSORS_INDEX: "a sharded safetensors index"}[kind]
    raise CheckpointError(f"checkpoint {quote_path(path)} is {what}; convert it first: "
                          + CONVERT_HINT.format(path=os.fspath(path)))


# ---------------------------------------------------------------------------------- safetensors

# safetensors dtype tag -> numpy dtype name ("bfloat16" has no numpy dtype)
SAFETENSORS_DTYPES = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
    "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8",
    "U8": "uint8", "U16": "uint16", "U32": "uint32", "U64": "uint64", "BOOL": "bool",
}

# safetensors memory-maps the file; pages it has touched count in the process's resident set
# until the mapping goes away. Re-opening after this many bytes keeps that bounded.
REOPEN_BYTES = 256 * 1024 * 1024


def bf16_to_f32(bits: np.ndarray) -> np.ndarray:
    """numpy has no bfloat16: widen the raw 16-bit words to float32 (bf16 is fp32's top half)."""
    return (bits.astype(np.uint32) << 16).view(np.float32)


def short_reason(exc: BaseException, limit: int = 160) -> str:
    text = str(exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    if len(line) > limit:
        cut = line.find(". ")
        line = line[: cut + 1] if 0 < cut < limit else line[: limit - 3] + "..."
    return line


def read_safetensors_header(path: str):
    """(entries, metadata, data_start) of a .safetensors file, validated against its size:
    entries = {name: (shape, numpy dtype name, begin, end)} with offsets relative to data_start."""
    size = os.path.getsize(path)
    bad = f"checkpoint {quote_path(path)} is not a readable safetensors file"
    with open(path, "rb") as f:
        first = f.read(8)
        if len(first) < 8:
            raise CheckpointError(f"{bad} (only {size} bytes)")
        (header_len,) = struct.unpack("<Q", first)
        if header_len > min(_MAX_HEADER, size - 8):
            raise CheckpointError(f"{bad} (no valid header)")
        try:
            header = json.loads(f.read(header_len))
        except (UnicodeDecodeError, ValueError):
            raise CheckpointError(f"{bad} (header is not JSON)") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{bad} (header is not a table)")
    metadata = header.pop("__metadata__", None) or {}
    entries, end = {}, 0
    try:
        for name, entry in header.items():
            begin, stop = (int(x) for x in entry["data_offsets"])
            if entry["dtype"] not in SAFETENSORS_DTYPES:
                raise CheckpointError(f"checkpoint {quote_path(path)}: tensor {name} has dtype {entry['dtype']}, "
                                      "which cannot be read")
            shape = tuple(int(d) for d in entry["shape"])
            entries[name] = (shape, SAFETENSORS_DTYPES[entry["dtype"]], begin, stop)
            end = max(end, stop)
    except (KeyError, TypeError, ValueError, AttributeError):
        raise CheckpointError(f"{bad} (malformed header)") from None
    data_start = 8 + header_len
    if data_start + end > size:
        raise CheckpointError(f"checkpoint {quote_path(path)} is truncated: its header describes {data_start + end} "
                              f"bytes, the file has {size}")
    return entries, metadata, data_start


class SafetensorsReader:
    """A .safetensors file: keys() in file order, info(key) -> (shape, dtype name), read(key),
    close(). bfloat16 is read as raw bits (numpy cannot hold it) and widened unless
    raw_bf16=True; other dtypes go through safetensors' numpy API, re-opened every
    REOPEN_BYTES so that the mapped pages do not pile up in the resident set."""

    def __init__(self, path: str):
        from safetensors import SafetensorError, safe_open

        self.path = path
        self._entries, self.metadata, self._data_start = read_safetensors_header(path)
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
            raise CheckpointError(f"checkpoint {quote_path(self.path)} is not a readable safetensors file "
                                  f"({short_reason(exc)})") from None
        self._since_open = 0

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
                    raise CheckpointError(f"checkpoint {quote_path(self.path)} is truncated at {key!r}")
            return bits if raw_bf16 else bf16_to_f32(bits)
        if self._handle is None or self._since_open >= REOPEN_BYTES:
            self._open()
        self._since_open += stop - begin
        try:
            return self._handle.get_tensor(key)
        except self._errors as exc:
            raise CheckpointError(f"checkpoint {quote_path(self.path)} is truncated or corrupt at {key!r} "
                                  f"({short_reason(exc)})") from None

    def close(self):
        if self._handle is not None:
            try:
                self._handle.__exit__(None, None, None)
            finally:
                self._handle = None


# ---------------------------------------------------------------------------------- MindSpore .ckpt
#
# A .ckpt is the protobuf message Checkpoint { repeated Value value = 1; } with
# Value { string tag = 1; TensorProto tensor = 2; MapTensorProto maptensor = 3; } and
# TensorProto { repeated int64 dims = 1; string tensor_type = 2; bytes tensor_content = 3; }.
# A repeated field may be split over concatenated encodings, and MindSpore (like
# svd_tools/ms_ckpt.py) writes one Value per record and cuts large tensors into several records
# with the same tag. So the file is read record by record: a scan of the small fields first,
# then each tensor's bytes straight into its array. mindspore.load_checkpoint instead reads and
# parses the whole file at once, which needs the file's size again in memory.

CKPT_DTYPES = {
    "Float16": "float16", "Float32": "float32", "Float64": "float64", "BFloat16": "bfloat16",
    "Int8": "int8", "UInt8": "uint8", "Int16": "int16", "UInt16": "uint16", "Int32": "int32",
    "UInt32": "uint32", "Int64": "int64", "UInt64": "uint64", "Bool": "bool",
}
_CRC_TRAILER = 17  # b"crc_num" + a 10-byte big-endian CRC32, after the last record


class _Corrupt(Exception):
    pass


def _varint(f) -> int:
    shift, value = 0, 0
    while True:
        byte = f.read(1)
        if not byte:
            raise _Corrupt("ends inside a record")
        value |= (byte[0] & 0x7F) << shift
        if not byte[0] & 0x80:
            return value
        shift += 7
        if shift > 63:
            raise _Corrupt("malformed length")


def _fields(f, end: int):
    """(field number, wire type, value) of each field up to offset `end`; a length-delimited
    field's value is (offset, length) and is skipped, not read."""
    while f.tell() < end:
        key = _varint(f)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value = _varint(f)
        elif wire == 2:
            length = _varint(f)
            value = (f.tell(), length)
            if value[0] + length > end:
                raise _Corrupt("a field runs past its record")
            f.seek(length, os.SEEK_CUR)
        elif wire == 1:
            value = f.read(8)
        elif wire == 5:
            value = f.read(4)
        else:
            raise _Corrupt(f"unknown wire type {wire}")
        yield number, wire, value


def _read_at(f, span, limit: int = 1 << 20) -> bytes:
    offset, length = span
    if length > limit:
        raise _Corrupt("a name or type field is implausibly long")
    here = f.tell()
    f.seek(offset)
    data = f.read(length)
    f.seek(here)
    return data


def _scan_ckpt(f, size: int):
    """{tag: (shape, dtype name, [(offset, length), ...])} in file order."""
    f.seek(max(size - _CRC_TRAILER, 0))
    end = size - _CRC_TRAILER if size >= _CRC_TRAILER and f.read(7) == b"crc_num" else size
    f.seek(0)
    entries: Dict[str, Tuple[Tuple[int, ...], str, List[Tuple[int, int]]]] = {}
    last = None
    for number, wire, span in _fields(f, end):
        if (number, wire) != (1, 2):
            raise _Corrupt(f"unexpected field {number} at the top level")
        record_end = span[0] + span[1]
        f.seek(span[0])
        tag, tensor = None, None
        for vnum, vwire, vspan in _fields(f, record_end):
            if (vnum, vwire) == (1, 2):
                tag = _read_at(f, vspan).decode("utf-8", errors="replace")
            elif (vnum, vwire) == (2, 2):
                tensor = vspan
            elif vnum == 3:
                raise _Corrupt("holds a map tensor, which the engine does not use")
        f.seek(record_end)
        if tag is None or tensor is None:
            raise _Corrupt("a record has no name or no tensor")
        dims, type_name, content = [], None, None
        f.seek(tensor[0])
        for tnum, twire, tspan in _fields(f, tensor[0] + tensor[1]):
            if tnum == 1 and twire == 0:
                dims.append(tspan)
            elif tnum == 1 and twire == 2:  # packed dims
                raw = _read_at(f, tspan)
                dims.extend(_unpack_varints(raw))
            elif (tnum, twire) == (2, 2):
                type_name = _read_at(f, tspan).decode("ascii", errors="replace")
            elif (tnum, twire) == (3, 2):
                content = tspan
        f.seek(record_end)
        if type_name is None or content is None:
            raise _Corrupt(f"tensor {tag!r} has no type or no data")
        if type_name == "str":  # MindSpore stores strings (e.g. appended metadata) as records too
            last = None
            continue
        if type_name not in CKPT_DTYPES:
            raise _Corrupt(f"tensor {tag!r} has type {type_name}, which cannot be read")
        if tag == last:
            entries[tag][2].append(content)
            continue
        if tag in entries:
            raise _Corrupt(f"tensor {tag!r} appears twice")
        entries[tag] = (tuple(dims), CKPT_DTYPES[type_name], [content])
        last = tag
    return entries


def _unpack_varints(raw: bytes) -> List[int]:
    out, value, shift = [], 0, 0
    for byte in raw:
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            out.append(value)
            value, shift = 0, 0
    return out


def _itemsize(dtype: str) -> int:
    return 2 if dtype == "bfloat16" else np.dtype(dtype).itemsize


class MindSporeCkptReader:
    """A MindSpore .ckpt read record by record, with the SafetensorsReader interface."""

    def __init__(self, path: str):
        self.path = path
        size = os.path.getsize(path)
        try:
            with open(path, "rb") as f:
                scanned = _scan_ckpt(f, size)
        except (_Corrupt, UnicodeDecodeError) as exc:
            raise CheckpointError(f"checkpoint {quote_path(path)} is not a readable MindSpore checkpoint "
                                  f"(truncated or corrupt: {exc})") from None
        if not scanned:
            raise CheckpointError(f"checkpoint {quote_path(path)} holds no tensors")
        self._entries = {}
        for tag, (dims, dtype, spans) in scanned.items():
            nbytes = sum(length for _, length in spans)
            if dims == (0,) and nbytes == _itemsize(dtype):
                dims = ()  # MindSpore writes a scalar's shape as [0]
            want = int(np.prod(dims, dtype=np.int64)) * _itemsize(dtype)
            if nbytes != want:
                raise CheckpointError(f"checkpoint {quote_path(path)} is corrupt: tensor {tag!r} has {nbytes} bytes, "
                                      f"its shape {dims} needs {want}")
            self._entries[tag] = (dims, dtype, spans)

    def keys(self) -> List[str]:
        return list(self._entries)

    def info(self, key):
        shape, dtype, _ = self._entries[key]
        return shape, dtype

    def read(self, key, raw_bf16: bool = False) -> np.ndarray:
        shape, dtype, spans = self._entries[key]
        array = np.empty(shape, dtype=np.uint16 if dtype == "bfloat16" else dtype)
        buffer = memoryview(array.reshape(-1)).cast("B") if array.size else memoryview(b"")
        filled = 0
        with open(self.path, "rb") as f:
            for offset, length in spans:
                f.seek(offset)
                if f.readinto(buffer[filled:filled + length]) != length:
                    raise CheckpointError(f"checkpoint {quote_path(self.path)} is truncated at {key!r}")
                filled += length
        if dtype == "bfloat16" and not raw_bf16:
            return bf16_to_f32(array)
        return array

    def close(self):
        pass


def open_checkpoint(path, prefer_fp16: bool = False):
    """A reader (keys/info/read/close) for a checkpoint the engine loads directly; a Hugging Face
    model id reads its cached snapshot, `prefer_fp16` picks a diffusers folder's fp16 files."""
    from .hub import resolve_checkpoint
    path = resolve_checkpoint(path)
    kind = engine_checkpoint_format(path)
    if kind == DIFFUSERS_FOLDER:
        from .diffusers_folder import DiffusersFolderReader
        return DiffusersFolderReader(os.fspath(path), prefer_fp16=prefer_fp16)
    return SafetensorsReader(os.fspath(path)) if kind == SAFETENSORS else MindSporeCkptReader(os.fspath(path))


# ---------------------------------------------------------------------------------- the engine

def build_engine(config):
    """The engine of a config (path, dict or OmegaConf). Parameters start as unallocated zeros,
    so even the full-size engine builds in seconds."""
    from .util import instantiate_from_config, load_config
    return instantiate_from_config(load_config(config, require_model=True).model)


def engine_param_shapes(engine_or_config) -> Dict[str, Tuple[int, ...]]:
    """Names and shapes of every engine parameter, given an engine or its config."""
    engine = engine_or_config
    if not hasattr(engine, "parameters_and_names"):
        engine = build_engine(engine_or_config)
    return {name: tuple(p.shape) for name, p in engine.parameters_and_names()}


def _available_memory() -> Optional[int]:
    """MemAvailable + SwapFree in bytes (Linux), or None."""
    try:
        with open("/proc/meminfo") as f:
            info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f if line.split()}
        return info["MemAvailable"] + info.get("SwapFree", 0)
    except (OSError, KeyError, ValueError, IndexError):
        return None


def _gb(nbytes: float) -> str:
    return f"{nbytes / 1e9:.2f} GB"


def load_checkpoint_into(engine, path, dtype=None) -> Dict[str, int]:
    """Fill every parameter of `engine` from `path`, one tensor at a time; names and shapes are
    validated before anything is read.

    Each tensor is converted once, straight to the dtype it is stored in: `dtype` (a MindSpore
    float type for every floating parameter, or a function of the parameter name returning one
    or None), else the parameter's own dtype. So an engine whose layers were set to float16
    before loading (O2) never holds its float16 weights in float32 first.
    Peak memory is the weights in their loaded dtype plus about one tensor."""
    import mindspore as ms

    from .diffusers_folder import wants_fp16
    reader = open_checkpoint(path, prefer_fp16=wants_fp16(engine, dtype))
    try:
        params = dict(engine.parameters_and_names())
        found = {key: reader.info(key)[0] for key in reader.keys()}
        check_names(engine_param_shapes(engine), found, source=f"checkpoint {quote_path(path)}")

        def target_dtype(name, param):
            chosen = dtype(name) if callable(dtype) and not isinstance(dtype, ms.Type) else dtype
            return param.dtype if chosen is None else chosen

        plan = []
        for key in reader.keys():
            name = map_upstream_key(key)
            if name is None:
                continue
            source_dtype = reader.info(key)[1]
            if source_dtype == "bool" or not source_dtype.startswith(("float", "bfloat")):
                raise CheckpointError(f"checkpoint {quote_path(path)}: tensor {key!r} has non-float dtype {source_dtype}")
            plan.append((key, name, target_dtype(name, params[name])))
        _check_memory(path, plan, params)

        for key, name, want in plan:
            param = params[name]
            try:
                value = reader.read(key)
                np_dtype = {ms.float16: np.float16, ms.float64: np.float64}.get(want, np.float32)
                if value.dtype != np_dtype:
                    value = value.astype(np_dtype)
                tensor = ms.Tensor.from_numpy(np.ascontiguousarray(value))  # shares the array's memory
                if want == ms.bfloat16:
                    tensor = tensor.astype(ms.bfloat16)
                del value
                if param.dtype != want:
                    param.set_dtype(want)
                param.set_data(tensor)
            except MemoryError:
                raise _memory_error(path, plan, params, key) from None
            except RuntimeError as exc:  # MindSpore's allocator reports its failures this way
                if "memory" not in str(exc).lower():
                    raise
                raise _memory_error(path, plan, params, key) from None
        return {"loaded": len(plan), "ignored": len(found) - len(plan)}
    finally:
        reader.close()


def _nbytes(shape, ms_dtype) -> int:
    import mindspore as ms
    itemsize = 2 if ms_dtype in (ms.float16, ms.bfloat16) else 8 if ms_dtype == ms.float64 else 4
    return int(np.prod(shape, dtype=np.int64)) * itemsize


def _check_memory(path, plan, params):
    """Refuse, with the sizes, a load that cannot fit: on Linux an allocation that does not fit
    is not refused but ends in the OOM killer, with no message at all."""
    needed = sum(_nbytes(params[name].shape, want) for _, name, want in plan)
    available = _available_memory()
    if available is not None and needed > available:
        raise CheckpointMemoryError(
            f"not enough memory to load checkpoint {quote_path(path)}: its weights need {_gb(needed)} in the loaded "
            f"dtype, {_gb(available)} is available")


def _memory_error(path, plan, params, key):
    needed = sum(_nbytes(params[name].shape, want) for _, name, want in plan)
    available = _available_memory()
    where = f", {_gb(available)} available now" if available is not None else ""
    return CheckpointMemoryError(f"ran out of memory loading checkpoint {quote_path(path)} at tensor {key!r}: its weights "
                                 f"need {_gb(needed)} in the loaded dtype{where}")
