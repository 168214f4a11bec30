"""Write a MindSpore ``.ckpt`` one tensor at a time.

A MindSpore checkpoint is the protobuf message ``Checkpoint { repeated Value value = 1; }``
serialised to a file.  Because a repeated field may be split over any number of
concatenated encodings of the same message, the file can be produced record by record:
each record is a ``Checkpoint`` holding exactly one ``Value``.  ``mindspore.save_checkpoint``
does the same internally, but only from a list of every parameter held in memory at once,
which is what this module avoids.

The small parts of each record (tag, dims, type name) are encoded with MindSpore's own
generated ``checkpoint_pb2`` messages; the tensor bytes are appended as the last field
of ``TensorProto`` and written straight from the array's buffer, so no copy of a tensor is
made while writing it.  The bytes produced are identical to ``Checkpoint.SerializeToString``
of the same record (checked in tests/test_convert.py).
"""
import importlib.util
import os
import sys

import numpy as np

# MindSpore itself cuts tensors larger than this into several records with the same tag
# (mindspore.train.serialization.SLICE_SIZE); its loader joins records with equal
# consecutive tags.  Doing the same keeps every protobuf field well below 2 GiB.
SLICE_BYTES = 512 * 1024 * 1024

# numpy dtype name -> MindSpore TensorProto.tensor_type
_NP_TO_MS = {
    "float16": "Float16",
    "float32": "Float32",
    "float64": "Float64",
    "int8": "Int8",
    "uint8": "UInt8",
    "int16": "Int16",
    "uint16": "UInt16",
    "int32": "Int32",
    "uint32": "UInt32",
    "int64": "Int64",
    "uint64": "UInt64",
    "bool": "Bool",
}


def _load_checkpoint_pb2():
    """MindSpore's generated ``checkpoint_pb2``, without executing ``mindspore/__init__``.

    Importing the whole mindspore package costs seconds and hundreds of MB; the generated
    module only needs google.protobuf.  Falls back to the regular import path.
    """
    if "mindspore.train.checkpoint_pb2" in sys.modules:
        return sys.modules["mindspore.train.checkpoint_pb2"]
    spec = importlib.util.find_spec("mindspore")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("mindspore is not installed")
    for root in spec.submodule_search_locations:
        path = os.path.join(root, "train", "checkpoint_pb2.py")
        if os.path.isfile(path):
            mod_spec = importlib.util.spec_from_file_location("_svd_tools_ms_checkpoint_pb2", path)
            module = importlib.util.module_from_spec(mod_spec)
            mod_spec.loader.exec_module(module)
            return module
    from mindspore.train import checkpoint_pb2  # pragma: no cover - unusual layouts

    return checkpoint_pb2


_PB2 = None


def checkpoint_pb2():
    global _PB2
    if _PB2 is None:
        _PB2 = _load_checkpoint_pb2()
    return _PB2


def ms_type_name(dtype) -> str:
    """MindSpore's type name for a numpy dtype (``"bfloat16"`` is accepted as a name too)."""
    name = dtype if isinstance(dtype, str) else np.dtype(dtype).name
    if name == "bfloat16":
        return "BFloat16"
    try:
        return _NP_TO_MS[name]
    except KeyError:
        raise TypeError(f"dtype {name} cannot be stored in a MindSpore checkpoint") from None


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low = n & 0x7F
        n >>= 7
        if n:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def _len_field(field_number: int, length: int) -> bytes:
    """Key and length of a length-delimited (wire type 2) field."""
    return _varint((field_number << 3) | 2) + _varint(length)


def record_prefix(name: str, shape, type_name: str, content_len: int) -> bytes:
    """Everything of one ``Checkpoint`` record that precedes the raw tensor bytes."""
    pb2 = checkpoint_pb2()
    tensor = pb2.TensorProto()
    tensor.dims.extend(int(d) for d in shape)
    tensor.tensor_type = type_name
    # tensor_content (field 3) is required, so the message is incomplete until we append it.
    head = tensor.SerializePartialToString() + _len_field(3, content_len)
    tensor_len = len(head) + content_len
    tag = name.encode("utf-8")
    value_head = _len_field(1, len(tag)) + tag + _len_field(2, tensor_len)
    value_len = len(value_head) + tensor_len
    return _len_field(1, value_len) + value_head + head


class CheckpointWriter:
    """Append tensors to an open binary file as MindSpore checkpoint records."""

    def __init__(self, fileobj):
        self._f = fileobj
        self.count = 0
        self.nbytes = 0

    def write(self, name: str, array: np.ndarray, type_name: str = None):
        """Write one tensor.  ``type_name`` overrides the stored type (used for bfloat16
        data carried as uint16)."""
        shape = tuple(np.shape(array))  # before ascontiguousarray, which turns 0-d into 1-d
        array = np.ascontiguousarray(array)
        if type_name is None:
            type_name = ms_type_name(array.dtype)
        raw = memoryview(array.reshape(-1)).cast("B") if array.size else memoryview(b"")
        total = len(raw)
        start = 0
        while True:
            stop = min(start + SLICE_BYTES, total)
            chunk = raw[start:stop]
            self._f.write(record_prefix(name, shape, type_name, len(chunk)))
            self._f.write(chunk)
            start = stop
            if start >= total:
                break
        self.count += 1
        self.nbytes += total
