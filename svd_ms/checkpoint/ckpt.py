"""THE MindSpore .ckpt codec: the record reader the engine loads through and the record writer the
converter saves with share this one description of the format.

A .ckpt is the protobuf message Checkpoint { repeated Value value = 1; } with
Value { string tag = 1; TensorProto tensor = 2; MapTensorProto maptensor = 3; } and
TensorProto { repeated int64 dims = 1; string tensor_type = 2; bytes tensor_content = 3; }
(proto2: dims are not packed). A repeated field may be split over concatenated encodings, so a
file is a sequence of records, one Value each, and a tensor larger than SLICE_BYTES is cut into
several records with the same tag, as MindSpore's own writer does. Reading and writing go record
by record, each tensor's bytes straight between the file and its array: mindspore.load_checkpoint
and save_checkpoint instead hold the whole file in memory at once.
"""
import os
from typing import Dict, List, Tuple

import numpy as np

from ..errors import CheckpointError
from .formats import quote_path
from .safetensors import bf16_to_f32, itemsize

# MindSpore TensorProto.tensor_type -> numpy dtype name ("bfloat16" has no numpy dtype)
CKPT_DTYPES = {
    "Float16": "float16", "Float32": "float32", "Float64": "float64", "BFloat16": "bfloat16",
    "Int8": "int8", "UInt8": "uint8", "Int16": "int16", "UInt16": "uint16", "Int32": "int32",
    "UInt32": "uint32", "Int64": "int64", "UInt64": "uint64", "Bool": "bool",
}
_TYPE_NAMES = {name: type_name for type_name, name in CKPT_DTYPES.items()}
_CRC_TRAILER = 17  # b"crc_num" + a 10-byte big-endian CRC32, after the last record
# MindSpore cuts larger tensors into records of this size (mindspore.train.serialization's
# SLICE_SIZE); it keeps every protobuf field well below 2 GiB.
SLICE_BYTES = 512 * 1024 * 1024
_VARINT, _LENGTH = 0, 2  # protobuf wire types


# ---------------------------------------------------------------------------------- encoding

def encode_varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # int64 fields encode negatives as their two's complement
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | 0x80 if n else low)
        if not n:
            return bytes(out)


def _key(number: int, wire: int) -> bytes:
    return encode_varint((number << 3) | wire)


def _length_field(number: int, length: int) -> bytes:
    return _key(number, _LENGTH) + encode_varint(length)


def ms_type_name(dtype) -> str:
    """MindSpore's type name for a numpy dtype (the name "bfloat16" is accepted too)."""
    name = dtype if isinstance(dtype, str) else np.dtype(dtype).name
    try:
        return _TYPE_NAMES[name]
    except KeyError:
        raise TypeError(f"dtype {name} cannot be stored in a MindSpore checkpoint") from None


def record_prefix(name: str, shape, type_name: str, content_len: int) -> bytes:
    """Everything of one record that precedes the raw tensor bytes; the bytes are those of
    Checkpoint.SerializeToString for the same record."""
    type_bytes = type_name.encode("ascii")
    tensor_head = b"".join(_key(1, _VARINT) + encode_varint(int(d)) for d in shape)
    tensor_head += _length_field(2, len(type_bytes)) + type_bytes + _length_field(3, content_len)
    tensor_len = len(tensor_head) + content_len
    tag = name.encode("utf-8")
    value_head = _length_field(1, len(tag)) + tag + _length_field(2, tensor_len)
    return _length_field(1, len(value_head) + tensor_len) + value_head + tensor_head


class CheckpointWriter:
    """Append tensors to an open binary file as MindSpore checkpoint records."""

    def __init__(self, fileobj):
        self._f = fileobj
        self.count = 0
        self.nbytes = 0

    def write(self, name: str, array: np.ndarray, type_name: str = None):
        """Write one tensor. `type_name` overrides the stored type (bfloat16 carried as uint16)."""
        shape = tuple(np.shape(array))  # before ascontiguousarray, which turns 0-d into 1-d
        array = np.ascontiguousarray(array)
        type_name = type_name or ms_type_name(array.dtype)
        raw = memoryview(array.reshape(-1)).cast("B") if array.size else memoryview(b"")
        start = 0
        while True:
            stop = min(start + SLICE_BYTES, len(raw))
            self._f.write(record_prefix(name, shape, type_name, stop - start))
            self._f.write(raw[start:stop])
            start = stop
            if start >= len(raw):
                break
        self.count += 1
        self.nbytes += len(raw)


# ---------------------------------------------------------------------------------- decoding

class _Corrupt(Exception):
    pass


def _read_varint(f) -> int:
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
        key = _read_varint(f)
        number, wire = key >> 3, key & 7
        if wire == _VARINT:
            value = _read_varint(f)
        elif wire == _LENGTH:
            length = _read_varint(f)
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


def _unpack_varints(raw: bytes) -> List[int]:
    out, value, shift = [], 0, 0
    for byte in raw:
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            out.append(value)
            value, shift = 0, 0
    return out


def _tensor_fields(f, span, tag):
    """(dims, type name, content span) of one TensorProto."""
    dims, type_name, content = [], None, None
    f.seek(span[0])
    for number, wire, value in _fields(f, span[0] + span[1]):
        if (number, wire) == (1, _VARINT):
            dims.append(value)
        elif (number, wire) == (1, _LENGTH):  # packed dims, as another writer may store them
            dims.extend(_unpack_varints(_read_at(f, value)))
        elif (number, wire) == (2, _LENGTH):
            type_name = _read_at(f, value).decode("ascii", errors="replace")
        elif (number, wire) == (3, _LENGTH):
            content = value
    if type_name is None or content is None:
        raise _Corrupt(f"tensor {tag!r} has no type or no data")
    return dims, type_name, content


def _scan(f, size: int):
    """{tag: (shape, dtype name, [(offset, length), ...])} in file order."""
    f.seek(max(size - _CRC_TRAILER, 0))
    end = size - _CRC_TRAILER if size >= _CRC_TRAILER and f.read(7) == b"crc_num" else size
    f.seek(0)
    entries: Dict[str, Tuple[Tuple[int, ...], str, List[Tuple[int, int]]]] = {}
    last = None
    for number, wire, span in _fields(f, end):
        if (number, wire) != (1, _LENGTH):
            raise _Corrupt(f"unexpected field {number} at the top level")
        record_end = span[0] + span[1]
        f.seek(span[0])
        tag, tensor = None, None
        for vnum, vwire, vspan in _fields(f, record_end):
            if (vnum, vwire) == (1, _LENGTH):
                tag = _read_at(f, vspan).decode("utf-8", errors="replace")
            elif (vnum, vwire) == (2, _LENGTH):
                tensor = vspan
            elif vnum == 3:
                raise _Corrupt("holds a map tensor, which the engine does not use")
        if tag is None or tensor is None:
            raise _Corrupt("a record has no name or no tensor")
        dims, type_name, content = _tensor_fields(f, tensor, tag)
        f.seek(record_end)
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


class MindSporeCkptReader:
    """A MindSpore .ckpt read record by record, with the SafetensorsReader interface."""

    def __init__(self, path):
        self.path = os.fspath(path)
        size = os.path.getsize(self.path)
        try:
            with open(self.path, "rb") as f:
                scanned = _scan(f, size)
        except (_Corrupt, UnicodeDecodeError) as exc:
            raise CheckpointError(f"checkpoint {quote_path(self.path)} is not a readable MindSpore checkpoint "
                                  f"(truncated or corrupt: {exc})") from None
        if not scanned:
            raise CheckpointError(f"checkpoint {quote_path(self.path)} holds no tensors")
        self._entries = {}
        for tag, (dims, dtype, spans) in scanned.items():
            nbytes = sum(length for _, length in spans)
            if dims == (0,) and nbytes == itemsize(dtype):
                dims = ()  # MindSpore writes a scalar's shape as [0]
            want = int(np.prod(dims, dtype=np.int64)) * itemsize(dtype)
            if nbytes != want:
                raise CheckpointError(f"checkpoint {quote_path(self.path)} is corrupt: tensor {tag!r} has {nbytes} "
                                      f"bytes, its shape {dims} needs {want}")
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
