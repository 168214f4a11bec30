"""Checks on what a visitor uploads: a size limit in bytes (read from the file system, before a
byte is decoded), a limit in pixels (read from the image or video header, before decoding, so that
a decompression bomb is refused), then the CLI's own readers (`preparation.open_image`: EXIF, alpha
on white, corrupt files named; `media.probe_video`: the container from the file's first bytes,
never its name). Messages name the file as the visitor called it (its last path part only), never
the server's temporary path."""
import os
import re
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

import numpy as np

from ..errors import ImageError, InputError, ParamError, VideoError
from ..media import MAX_INPUT_PIXELS, MAX_VIDEO_FRAMES, probe_video
from ..preparation import open_image, prepare_input

DEFAULT_MAX_BYTES = 20 * 2**20
# 4096 x 4096: far above the 1024 x 576 the models were trained at, far below what a bomb unpacks to.
DEFAULT_MAX_PIXELS = 4096 * 4096


@dataclass(frozen=True)
class UploadLimits:
    max_bytes: int = DEFAULT_MAX_BYTES
    max_pixels: int = DEFAULT_MAX_PIXELS

    def __post_init__(self):
        if not 0 < self.max_bytes:
            raise ParamError("max_upload_mb", f"the upload limit must be positive, got {self.max_bytes} bytes")
        if not 0 < self.max_pixels <= MAX_INPUT_PIXELS:
            raise ParamError("max_upload_pixels", f"max_upload_pixels={self.max_pixels} must be between 1 and "
                             f"{MAX_INPUT_PIXELS:,}")


def _megabytes(n: int) -> str:
    return f"{n / 2**20:.1f} MB"


MAX_NAME_CHARS = 120


def visitor_name(name: Optional[str], path: str) -> str:
    """What the visitor called the file, safe to show and to record in a sidecar: its last path
    part only (a name such as '../../etc/x.png' names no place on this machine), printable
    characters, at most MAX_NAME_CHARS; 'upload' when nothing is left."""
    base = re.split(r"[\\/]", str(name or os.path.basename(path)))[-1]
    base = "".join(ch for ch in base if ch.isprintable()).strip()[:MAX_NAME_CHARS]
    return base if base not in ("", ".", "..") else "upload"


def _check_bytes(path: str, limits: UploadLimits, name: str, error=ImageError) -> None:
    try:
        size = os.stat(path).st_size
    except OSError:
        raise error(f"{name!r}: the upload cannot be read") from None
    if size > limits.max_bytes:
        raise error(f"{name!r}: {_megabytes(size)} is larger than the {_megabytes(limits.max_bytes)} "
                    f"upload limit")
    if size == 0:
        raise error(f"{name!r}: the file is empty")


def _renamed(exc: Exception, path: str, name: str) -> str:
    """The readers name the path they read: show the visitor's name for it instead."""
    return str(exc).replace(repr(path), repr(name)).replace(os.path.abspath(path), name).replace(path, name)


def check_upload(path: str, limits: UploadLimits, name: Optional[str] = None) -> Tuple[Any, Dict[str, Any]]:
    """Open an uploaded file as the CLI opens its images: (RGB PIL image, info). `name` is what
    the visitor called the file (default: the file's own name). Raises ImageError naming it."""
    name = visitor_name(name, path)
    _check_bytes(path, limits, name)
    try:
        img, info = open_image(path, max_pixels=limits.max_pixels)
    except ImageError as exc:
        raise ImageError(_renamed(exc, path, name)) from None
    info["path"] = name
    return img, info


def check_video_upload(path: str, limits: UploadLimits, name: Optional[str] = None) -> Dict[str, Any]:
    """Check an uploaded clip before any frame is decoded: bytes, a container ffmpeg reads (told
    by the file's first bytes), frame size within the pixel limit, not too many frames. Returns
    {"path": the visitor's name, "width", "height", "fps", "duration_s", "frames"} ("frames":
    duration x fps as the container states them; the pipeline's reader counts exactly and names a
    file that is shorter). Raises VideoError (an ImageError) naming the file as the visitor did."""
    name = visitor_name(name, path)
    _check_bytes(path, limits, name, VideoError)
    try:
        meta = probe_video(path)
    except ImageError as exc:
        raise VideoError(_renamed(exc, path, name)) from None
    w, h = meta["size"]
    if w * h > limits.max_pixels:
        raise VideoError(f"{name!r}: {w}x{h} frames have more than {limits.max_pixels:,} pixels; refused before "
                         f"decoding")
    fps, duration = float(meta.get("fps") or 0), float(meta.get("duration") or 0)
    frames = int(round(fps * duration)) if np.isfinite(fps * duration) else 0
    if frames > MAX_VIDEO_FRAMES:
        raise VideoError(f"{name!r}: about {frames} frames, more than {MAX_VIDEO_FRAMES}; trim it first")
    return {"path": name, "width": int(w), "height": int(h), "fps": fps, "duration_s": duration, "frames": frames}


def prepare_upload(img, info: Dict[str, Any], height: Optional[int], width: Optional[int],
                   name: str, orbit: bool = False) -> Tuple[np.ndarray, Dict[str, Any], list]:
    """The conditioning frame, prepared by the CLI's and the API's one rule
    (`preparation.prepare_input`; an SV3D model's cut-out is recentred as on the command line)."""
    for side, value in (("height", height), ("width", width)):
        if value is not None and (value < 64 or value % 64):
            raise ParamError(side, f"{side}={value} must be a multiple of 64 (64, 128, ..., 1024): the model's "
                             f"latents are 1/8 of the image and its UNet halves them three times")
    try:
        prepared = prepare_input(img, orbit=orbit, height=height, width=width)
    except InputError as exc:
        raise ImageError(f"{name!r}: {exc}" if repr(name) not in str(exc) else str(exc)) from None
    return prepared.pixels, dict(info, **prepared.info, path=name), prepared.warnings
