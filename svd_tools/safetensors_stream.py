"""Write a .safetensors file one tensor at a time.

``safetensors.numpy.save_file`` needs every tensor in memory at once.  The format is simple
enough to stream: an 8-byte little-endian header length, a JSON header giving each tensor's
dtype, shape and byte range, then the raw little-endian data in that order.  Shapes and dtypes
must be known up front; the data is produced lazily. The dtype table is the reader's
(svd_ms.checkpoint.safetensors), so whatever is written here reads back there.
"""
import json
import struct

import numpy as np

from svd_ms.checkpoint.safetensors import SAFETENSORS_TAGS, itemsize


def write_safetensors(path, specs, produce, metadata=None, align=8):
    """Write ``specs`` = [(name, dtype_name, shape), ...] to ``path``.

    ``produce(name)`` returns the tensor's data as a numpy array of that shape (for
    ``"bfloat16"``: the uint16 bit patterns).  Returns the number of bytes written.
    """
    header = {}
    offset = 0
    for name, dtype, shape in specs:
        tag = SAFETENSORS_TAGS[dtype]
        n = int(np.prod(shape, dtype=np.int64)) * itemsize(dtype)
        header[name] = {"dtype": tag, "shape": [int(d) for d in shape], "data_offsets": [offset, offset + n]}
        offset += n
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    blob = json.dumps(header, separators=(",", ":")).encode("utf-8")
    blob += b" " * (-len(blob) % align)  # the format pads the header with spaces
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for name, dtype, shape in specs:
            array = np.asarray(produce(name))
            array = array if array.flags.c_contiguous else np.ascontiguousarray(array)
            want = header[name]["data_offsets"][1] - header[name]["data_offsets"][0]
            if tuple(array.shape) != tuple(shape) or array.nbytes != want:
                raise ValueError(f"{name}: produced {array.dtype}{array.shape}, declared {dtype}{tuple(shape)}")
            if array.dtype.byteorder == ">":
                array = array.astype(array.dtype.newbyteorder("<"))
            f.write(memoryview(array.reshape(-1)).cast("B") if array.size else b"")
            del array
    return 8 + len(blob) + offset
