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
from .diffusers_folder import DiffusersFolderReader
from .formats import (CONVERT_HINT, DIFFUSERS_FOLDER, MINDSPORE, SAFETENSORS, SAFETENSORS_INDEX, TORCH,
                      checkpoint_format, quote_path)
from .safetensors import SafetensorsReader

ENGINE_READERS = {SAFETENSORS: SafetensorsReader, MINDSPORE: MindSporeCkptReader, DIFFUSERS_FOLDER: DiffusersFolderReader}

_WHAT = {TORCH: "a PyTorch checkpoint", SAFETENSORS_INDEX: "a sharded safetensors index"}


def engine_checkpoint_format(path) -> str:
    """The format of a checkpoint the engine loads directly (one of ENGINE_READERS); any other
    is a one-line CheckpointError saying how to convert it."""
    kind = checkpoint_format(path)
    if kind in ENGINE_READERS:
        return kind
    raise CheckpointError(f"checkpoint {quote_path(path)} is {_WHAT.get(kind, kind)}; convert it first: "
                          + CONVERT_HINT.format(path=os.fspath(path)))


def open_checkpoint(path, prefer_fp16: bool = False):
    """A reader (keys/info/read/close) for a checkpoint the engine loads directly; a Hugging Face
    model id reads its cached snapshot, and `prefer_fp16` picks a diffusers folder's fp16 files."""
    from ..hub import resolve_checkpoint
    path = os.fspath(resolve_checkpoint(path))
    kind = engine_checkpoint_format(path)
    if kind == DIFFUSERS_FOLDER:
        return DiffusersFolderReader(path, prefer_fp16=prefer_fp16)
    return ENGINE_READERS[kind](path)
