"""Which reader opens a checkpoint the engine loads directly.

Every reader has the same small interface, which is all the loader and the converter use:
  keys()                  tensor names, in file order
  info(key)               (shape tuple, numpy dtype name; "bfloat16" included) without reading data
  read(key, raw_bf16=False)  the tensor as a numpy array (bfloat16 widened to float32, or its
                          uint16 bits with raw_bf16=True)
  close()
Names are the upstream checkpoint names (see loader.map_upstream_key).

ENGINE_READERS maps a format of svd_ms.checkpoint.formats to the class that opens it; a format
not in the table is refused with the command that converts it. A new source (a diffusers folder
read in place, say) plugs in by adding its reader to the table: nothing else changes.
"""
import os

from ..errors import CheckpointError
from .ckpt import MindSporeCkptReader
from .formats import (CONVERT_HINT, DIFFUSERS_FOLDER, MINDSPORE, SAFETENSORS, SAFETENSORS_INDEX, TORCH,
                      checkpoint_format, quote_path)
from .safetensors import SafetensorsReader

ENGINE_READERS = {SAFETENSORS: SafetensorsReader, MINDSPORE: MindSporeCkptReader}

_WHAT = {TORCH: "a PyTorch checkpoint", DIFFUSERS_FOLDER: "a diffusers folder",
         SAFETENSORS_INDEX: "a sharded safetensors index"}


def engine_checkpoint_format(path) -> str:
    """The format of a checkpoint the engine loads directly (one of ENGINE_READERS); any other
    is a one-line CheckpointError saying how to convert it."""
    kind = checkpoint_format(path)
    if kind in ENGINE_READERS:
        return kind
    raise CheckpointError(f"checkpoint {quote_path(path)} is {_WHAT.get(kind, kind)}; convert it first: "
                          + CONVERT_HINT.format(path=os.fspath(path)))


def open_checkpoint(path):
    """A reader (keys/info/read/close) for a checkpoint the engine loads directly."""
    return ENGINE_READERS[engine_checkpoint_format(path)](os.fspath(path))
