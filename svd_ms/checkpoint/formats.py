"""What a checkpoint path is, decided from its content.

A file announces its format in its first bytes (a safetensors header, a torch zip or pickle, a
MindSpore .ckpt record), so a safetensors file named .bin or .ckpt is still read as safetensors.
The extension is only a fallback for files whose first bytes say nothing, so that a damaged file
is reported by the reader of the format it claims. Every message names the path with quote_path.
"""
import os
import struct
from typing import Optional

from ..errors import CheckpointError

SAFETENSORS = "safetensors"
SAFETENSORS_INDEX = "safetensors-index"
MINDSPORE = "mindspore"
TORCH = "torch"
DIFFUSERS_FOLDER = "diffusers-folder"

CONVERT_HINT = "python -m svd_tools.convert --pt_weights_file {path} --model_config CONFIG --out_dir DIR"

MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024
_BY_EXTENSION = {".safetensors": SAFETENSORS, ".ckpt": MINDSPORE, ".pt": TORCH, ".pth": TORCH, ".bin": TORCH}


def quote_path(path) -> str:
    """A file name for a one-line message: quoted, control characters escaped."""
    return repr(os.fspath(path))


def short_reason(exc: BaseException, limit: int = 160) -> str:
    """The first line of a library's error, cut to `limit` characters."""
    text = str(exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    if len(line) > limit:
        cut = line.find(". ")
        line = line[: cut + 1] if 0 < cut < limit else line[: limit - 3] + "..."
    return line


def _sniff(head: bytes) -> Optional[str]:
    """The format the first bytes of a file announce, or None."""
    if len(head) >= 10:
        # safetensors: a little-endian header length, then a JSON object. Checked first: the
        # length's low byte may well be 0x80, which also starts a pickle.
        (n,) = struct.unpack("<Q", head[:8])
        if 2 <= n <= MAX_SAFETENSORS_HEADER and head[8:9] == b"{" and head[9:10] in (b'"', b"}", b" ", b"\n"):
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

    Decided by content where the first bytes say it, by extension otherwise. Anything else, a
    missing or unreadable path, a FIFO or a device, is a one-line CheckpointError naming the path."""
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


def is_safetensors(path) -> bool:
    """Whether a regular file's content is safetensors, whatever its name."""
    return os.path.isfile(path) and sniff_format(path) == SAFETENSORS
