"""Checkpoints: what a file is (formats), how it is read (safetensors, ckpt, readers) and how it
fills the engine (loader). The converter (svd_tools) reads its inputs through the same readers
and writes .ckpt files with the same codec."""
from .ckpt import CKPT_DTYPES, CheckpointWriter, MindSporeCkptReader, ms_type_name
from .formats import (CONVERT_HINT, DIFFUSERS_FOLDER, MINDSPORE, SAFETENSORS, SAFETENSORS_INDEX, TORCH,
                      checkpoint_format, is_safetensors, quote_path, short_reason, sniff_format)
from .loader import (build_engine, check_names, engine_param_shapes, ignored_reason, load_checkpoint_into,
                     map_upstream_key)
from .readers import ENGINE_READERS, engine_checkpoint_format, open_checkpoint
from .safetensors import SAFETENSORS_DTYPES, SafetensorsReader, bf16_to_f32, read_safetensors_header

__all__ = [
    "CKPT_DTYPES", "CheckpointWriter", "MindSporeCkptReader", "ms_type_name",
    "CONVERT_HINT", "DIFFUSERS_FOLDER", "MINDSPORE", "SAFETENSORS", "SAFETENSORS_INDEX", "TORCH",
    "checkpoint_format", "is_safetensors", "quote_path", "short_reason", "sniff_format",
    "build_engine", "check_names", "engine_param_shapes", "ignored_reason", "load_checkpoint_into", "map_upstream_key",
    "ENGINE_READERS", "engine_checkpoint_format", "open_checkpoint",
    "SAFETENSORS_DTYPES", "SafetensorsReader", "bf16_to_f32", "read_safetensors_header",
]
