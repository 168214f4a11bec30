"""Checks on what a visitor uploads: a size limit in bytes (read from the file system, before a
byte is decoded), a limit in pixels (read from the image header, before decoding, so that a
decompression bomb is refused), then the CLI's own reader (`preparation.open_image`: EXIF, alpha on
white, corrupt files named). Messages name the file as the visitor called it, never the server's
temporary path."""
import os
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

import numpy as np

from ..errors import ImageError, InputError, ParamError
from ..media import MAX_INPUT_PIXELS
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


def check_upload(path: str, limits: UploadLimits, name: Optional[str] = None) -> Tuple[Any, Dict[str, Any]]:
    """Open an uploaded file as the CLI opens its images: (RGB PIL image, info). `name` is what
    the visitor called the file (default: the file's own name). Raises ImageError naming it."""
    name = name or os.path.basename(path)
    try:
        size = os.stat(path).st_size
    except OSError:
        raise ImageError(f"{name!r}: the upload cannot be read") from None
    if size > limits.max_bytes:
        raise ImageError(f"{name!r}: {_megabytes(size)} is larger than the {_megabytes(limits.max_bytes)} "
                         f"upload limit")
    if size == 0:
        raise ImageError(f"{name!r}: the file is empty")
    try:
        img, info = open_image(path, max_pixels=limits.max_pixels)
    except ImageError as exc:
        # open_image names the path it read: show the visitor's name for it instead.
        raise ImageError(str(exc).replace(repr(path), repr(name)).replace(path, name)) from None
    info["path"] = name
    return img, info


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
