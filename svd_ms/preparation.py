"""What the user handed in -> what the model is conditioned on: the one preparation path of the
command line, the Python API and the web page.

`prepare_input(image, orbit=..., height=..., width=..., keep_background=..., image_frame_ratio=...)`
takes a path, a PIL image, an array or an earlier `PreparedImage` and returns a `PreparedImage`:
the uint8 pixels, the float32 (1, 3, H, W) array in [-1, 1] the conditioner gets, and a record of
what was done (`info`, `warnings`). The pipeline exposes it as `pipe.prepare_input(...)`, and
`generate(path, ...)` runs it, so the same file and flags give the same conditioning everywhere.

The rules, chosen by upstream's `scripts/sampling/simple_video_sample.py` (sgm):
- Transparency is composited on white the way upstream's SV3D branch does it (the only
  compositing upstream does; its SV4D 2.0 `preprocess_video` does the same): in float,
  rgb * alpha + (1 - alpha), truncated to uint8. Opaque pixels keep their exact value. The same
  rule serves plain pictures with an alpha channel (upstream's SVD branch drops alpha, which shows
  whatever colour hides under transparent pixels; the former integer `alpha_composite` here
  differed from upstream's formula by one level on half-transparent pixels).
- A picture for an SV3D model (orbit) with transparency is a cut-out and is framed as upstream
  frames it: its alpha bounding box pasted at the centre of a square canvas (the image's height,
  or box / image_frame_ratio), LANCZOS-resized to the view size, then composited on white (in that
  order, as upstream). A picture without transparency has its background removed with rembg
  first, offline only; or, with keep_background, it is used as it is by the plain rule below at
  the square view size (the centre square the former crop-then-LANCZOS rule of sv3d.py cut; one
  resize rule now serves both).
- Every other picture: a side that is not a multiple of 64 is brought down to one by a bicubic
  resize, as upstream's SVD branch does (Pillow's default filter there; LANCZOS here before);
  pictures above MAX_AUTO_PIXELS are scaled down; --width/--height scale the picture to cover
  that size (LANCZOS when shrinking, bicubic when enlarging) and cut the centre, the rule training
  data follows too.
Arrays of uint8 HxWx3 are pixels already decoded (what the command line hands the pipeline) and
float arrays in [-1, 1] are model input: both are taken as they are; given height/width, pixels
are sized by the plain rule. Paths, PIL images and HxWx4 arrays follow the rules above.
"""
import math
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from .background import remove_background
from .errors import ImageError, InputError
from .media import MAX_INPUT_PIXELS, open_image_as_stored, read_video_frames
from .sv3d import IMAGE_SIZE

# The released SVD / SVD-XT models were trained on 1024 x 576 (width x height) frames.
SVD_TRAIN_SIZE = (1024, 576)
# Without --width/--height, an image larger than this is scaled down to it (aspect kept).
MAX_AUTO_PIXELS = 1024 * 1024


@dataclass
class PreparedImage:
    """One conditioning image: `pixels` uint8 (H, W, 3) (None for float input), `array` float32
    (1, 3, H, W) in [-1, 1], and what preparation did (`info`, `warnings`)."""
    array: np.ndarray
    pixels: Optional[np.ndarray] = None
    info: Dict[str, Any] = field(default_factory=dict)
    warnings: List[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------- alpha

def has_alpha(img) -> bool:
    return img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (img.mode == "P" and "transparency" in img.info)


def composite_on_white(rgba: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 4) -> uint8 (H, W, 3) on white, by upstream's SV3D formula (float, truncated)."""
    a = np.asarray(rgba, np.float64) / 255.0
    rgb = a[..., :3] * a[..., 3:] + (1 - a[..., 3:])
    return (rgb * 255).astype(np.uint8)


def to_rgb(img) -> Tuple[Any, Optional[str]]:
    """A PIL image as 8-bit RGB, and a note of the conversion (None when it was RGB already).
    Transparency is composited on white; 16-bit and float greys are scaled to 8 bits."""
    from PIL import Image

    mode = img.mode
    if mode == "RGB":
        return img, None
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(img, dtype=np.float64)
        top = 65535.0 if a.max(initial=0) > 255 else 255.0
        a = np.clip(a / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(a).convert("RGB"), f"{mode} scaled to 8-bit RGB"
    if has_alpha(img):
        return Image.fromarray(composite_on_white(np.asarray(img.convert("RGBA")))), f"{mode} composited on white"
    return img.convert("RGB"), f"{mode} converted to RGB"


def open_image(path: str, max_pixels: int = MAX_INPUT_PIXELS):
    """Open one image file: (RGB PIL image with EXIF orientation applied, info). ImageError names
    the file on any failure; more than `max_pixels` is refused from the header, before decoding."""
    img, info = open_image_as_stored(path, max_pixels)
    img, conversion = to_rgb(img)
    if conversion:
        info["conversion"] = conversion
    return img, info


# ---------------------------------------------------------------------------------- size

def cover_size(size: Tuple[int, int], width: int, height: int) -> Tuple[int, int]:
    """The (w, h) an image of `size` is resized to so that it covers width x height."""
    w, h = size
    scale = max(width / w, height / h)
    return max(width, math.ceil(w * scale - 1e-6)), max(height, math.ceil(h * scale - 1e-6))


def resize_cover_crop(img, width: int, height: int):
    """Scale a PIL image so it covers width x height (LANCZOS when shrinking, bicubic when
    enlarging), then cut the centre."""
    from PIL import Image

    w, h = img.size
    rw, rh = cover_size((w, h), width, height)
    if (rw, rh) != (w, h):
        shrinking = rw * rh < w * h
        img = img.resize((rw, rh), Image.Resampling.LANCZOS if shrinking else Image.Resampling.BICUBIC)
    left, top = (rw - width) // 2, (rh - height) // 2
    return img.crop((left, top, left + width, top + height))


def resize_cover_crop_frames(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """(T, h, w, 3) uint8 video frames through `resize_cover_crop`, frame by frame."""
    from PIL import Image

    out = np.empty((frames.shape[0], height, width, 3), np.uint8)
    for i, frame in enumerate(frames):
        out[i] = np.asarray(resize_cover_crop(Image.fromarray(frame), width, height))
    return out


def prepare_image(img, info: Dict[str, Any], height: Optional[int] = None, width: Optional[int] = None,
                  reference_size: Tuple[int, int] = SVD_TRAIN_SIZE, name: str = "image"):
    """Size an RGB PIL image for the model (the plain rule, see the module docstring).
    Returns (uint8 HxWx3, info, warnings)."""
    from PIL import Image

    warnings: List[str] = []
    w, h = img.size
    if w < 64 or h < 64:
        raise ImageError(f"{name}: {w}x{h} is too small, both sides must be at least 64 px")
    if height is not None or width is not None:
        if height is None:
            height = max(64, int(round(h * width / w / 64)) * 64)
        if width is None:
            width = max(64, int(round(w * height / h / 64)) * 64)
        img = resize_cover_crop(img, width, height)
        rw, rh = cover_size((w, h), width, height)
        info["preprocessing"] = f"resized {w}x{h} -> {rw}x{rh}, center-cropped to {width}x{height}"
    elif w * h > MAX_AUTO_PIXELS:
        scale = math.sqrt(MAX_AUTO_PIXELS / (w * h))
        nw, nh = max(64, int(w * scale) // 64 * 64), max(64, int(h * scale) // 64 * 64)
        img = img.resize((nw, nh), Image.Resampling.LANCZOS)
        info["preprocessing"] = f"resized {w}x{h} -> {nw}x{nh}"
        warnings.append(f"{name}: {w}x{h} is larger than {MAX_AUTO_PIXELS:,} pixels; resized to {nw}x{nh} "
                        f"(use --width/--height to choose the size)")
    elif w % 64 or h % 64:
        nw, nh = w - w % 64, h - h % 64
        img = img.resize((nw, nh), Image.Resampling.BICUBIC)
        info["preprocessing"] = f"resized {w}x{h} -> {nw}x{nh}"
        warnings.append(f"{name}: {w}x{h} is not a multiple of 64 on each side; resized to {nw}x{nh} "
                        f"(use --width/--height to resize and crop instead)")
    out_w, out_h = img.size
    info["size"] = [out_w, out_h]
    ref_w, ref_h = reference_size
    far_area = not (0.5 <= (out_w * out_h) / (ref_w * ref_h) <= 2.0)
    far_aspect = abs(math.log((out_w / out_h) / (ref_w / ref_h))) > math.log(1.25)
    if far_area or far_aspect:
        warnings.append(f"{name}: {out_w}x{out_h} is far from {ref_w}x{ref_h}, the size the model was trained "
                        f"at; expect weaker motion and detail (try --width={ref_w} --height={ref_h}, or raise "
                        f"--SVD.noise_aug_strength)")
    info["warnings"] = warnings
    return np.asarray(img, dtype=np.uint8).copy(), info, warnings


def load_image(path: str, height: Optional[int] = None, width: Optional[int] = None,
               reference_size: Tuple[int, int] = SVD_TRAIN_SIZE):
    """Read one image file as uint8 HxWx3, sized for the model: (array, info, warnings)."""
    img, info = open_image(path)
    return prepare_image(img, info, height, width, reference_size, name=repr(path))


# ---------------------------------------------------------------------------------- SV3D cut-outs

def recentre_cutout(rgba, size: int = IMAGE_SIZE, image_frame_ratio: Optional[float] = None) -> np.ndarray:
    """Upstream's framing of a cut-out: the alpha bounding box pasted at the centre of a square
    canvas (as tall as the image, or bbox / image_frame_ratio), resized to `size`, on white."""
    from PIL import Image
    arr = np.array(rgba.convert("RGBA"))
    ys, xs = np.nonzero(arr[..., 3])
    if ys.size == 0:
        raise InputError("image is fully transparent: there is no object to centre")
    y, x = int(ys.min()), int(xs.min())
    h, w = int(ys.max()) - y + 1, int(xs.max()) - x + 1
    max_size = max(w, h)
    # Upstream takes the image height as the canvas side; a wider object would not fit there (an
    # error upstream), so the canvas grows to hold it.
    side = int(max_size / image_frame_ratio) if image_frame_ratio is not None else arr.shape[0]
    side = max(side, max_size)
    canvas = np.zeros((side, side, 4), np.uint8)
    centre = side // 2
    canvas[centre - h // 2:centre - h // 2 + h, centre - w // 2:centre - w // 2 + w] = arr[y:y + h, x:x + w]
    return composite_on_white(np.asarray(Image.fromarray(canvas).resize((size, size), Image.LANCZOS)))


def _open_any(image, name: str):
    """A path, PIL image or uint8 HxWx3/4 array as a PIL image in its own mode, and its info."""
    from PIL import Image
    if isinstance(image, (str, os.PathLike)):
        return open_image_as_stored(os.fspath(image))
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] not in (3, 4):
            raise InputError(f"{name} array must be uint8 HxWx3 or HxWx4, got {image.dtype} {image.shape}")
        return Image.fromarray(image), {}
    if hasattr(image, "convert") and hasattr(image, "size"):
        return image, {}
    raise InputError(f"{name} must be a path, a PIL image or an array, got {type(image).__name__}")


def _view_size(height: Optional[int], width: Optional[int]) -> int:
    if height is not None and width is not None and height != width:
        raise InputError(f"height={height} width={width}: SV3D makes square views; give one side")
    size = height or width or IMAGE_SIZE
    if isinstance(size, bool) or not isinstance(size, int) or size < 64 or size % 64:
        raise InputError(f"image size must be a positive multiple of 64, got {size!r}")
    return size


def _check_frame_ratio(image_frame_ratio) -> None:
    if image_frame_ratio is not None and (isinstance(image_frame_ratio, bool)
                                          or not isinstance(image_frame_ratio, (int, float))
                                          or not 0 < image_frame_ratio <= 1):
        raise InputError(f"image_frame_ratio must be a number in (0, 1], got {image_frame_ratio!r}")


# ---------------------------------------------------------------------------------- the one path

def prepare_input(image, *, orbit: bool = False, height: Optional[int] = None, width: Optional[int] = None,
                  keep_background: bool = False, image_frame_ratio: Optional[float] = None) -> PreparedImage:
    """The conditioning image of `image` (see the module docstring for the rules).

    orbit: the model is an SV3D orbit model (square views, cut-outs recentred).
    height, width: the size to make (the CLI's --height/--width); SV3D: one side of the square view.
    keep_background, image_frame_ratio: SV3D only (the CLI's flags of the same names).
    """
    if isinstance(image, PreparedImage):
        return image
    if image is None:
        raise InputError("an image is required")
    if not orbit and (keep_background or image_frame_ratio is not None):
        raise InputError("keep_background and image_frame_ratio prepare SV3D inputs; this model is not SV3D")
    if isinstance(image, np.ndarray) and image.dtype != np.uint8:
        return PreparedImage(array=image_to_array(image), info={"input": "float array"})
    name = repr(os.fspath(image)) if isinstance(image, (str, os.PathLike)) else "image"
    try:
        return _prepare(image, name, orbit, height, width, keep_background, image_frame_ratio)
    except ImageError:
        raise
    except InputError as exc:  # a file that cannot be used: the error names it, the job's other files run
        if name == "image":
            raise
        raise ImageError(str(exc) if name in str(exc) else f"{name}: {exc}") from None


def _prepare(image, name: str, orbit: bool, height, width, keep_background: bool, image_frame_ratio):
    if _is_pixels(image) and height is None and width is None:  # decoded already: the model input as it is
        pixels = np.ascontiguousarray(image)
        return PreparedImage(image_to_array(pixels), pixels, {"input": "pixels", "size": [image.shape[1],
                                                                                        image.shape[0]]}, [])
    img, info = _open_any(image, name)
    reference = SVD_TRAIN_SIZE
    if orbit:
        _check_frame_ratio(image_frame_ratio)
        size = _view_size(height, width)
        if not keep_background and (has_alpha(img) or not _is_pixels(image)):
            rgba = img.convert("RGBA") if has_alpha(img) else remove_background(
                img, "image" if name == "image" else f"image {name}")
            pixels = recentre_cutout(rgba, size, image_frame_ratio)
            info.update(size=[size, size], preprocessing="SV3D: object recentred on white")
            return PreparedImage(image_to_array(pixels), pixels, info, [])
        # A picture used as it is (keep_background), or pixels given a size: a square view.
        height = width = size
        reference = (IMAGE_SIZE, IMAGE_SIZE)
    img, conversion = to_rgb(img)
    if conversion:
        info["conversion"] = conversion
    pixels, info, warnings = prepare_image(img, info, height, width, reference, name=name)
    return PreparedImage(image_to_array(pixels), pixels, info, warnings)


def _is_pixels(image) -> bool:
    return isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3


def image_to_array(image) -> np.ndarray:
    """uint8 HxWx3 pixels or a float array in [-1, 1] -> float32 (1, 3, H, W) in [-1, 1]."""
    array = np.asarray(image)
    if array.dtype == np.uint8:
        if array.ndim != 3 or array.shape[2] != 3:
            raise InputError(f"uint8 image must be HxWx3, got shape {array.shape}")
        array = array.astype(np.float32).transpose(2, 0, 1)[None] / 127.5 - 1.0
    else:
        array = array.astype(np.float32)
        if array.ndim == 3:
            array = array[None]
        if array.ndim != 4 or array.shape[:2] != (1, 3):
            raise InputError(f"float image must be (1, 3, H, W) or (3, H, W), got shape {array.shape}")
    return np.ascontiguousarray(array, np.float32)


# ---------------------------------------------------------------------------------- input videos

def load_video(path: str, num_frames: int, height: Optional[int] = None, width: Optional[int] = None,
               reference_size: Tuple[int, int] = SVD_TRAIN_SIZE):
    """An input video as `num_frames` uint8 (T, H, W, 3) frames sized for the model: (frames, info,
    warnings). The size is chosen from the first frame by the image rule and applied to all."""
    from PIL import Image

    picked, info = read_video_frames(path, num_frames)
    src_h, src_w = picked.shape[1:3]
    first, info, warnings = prepare_image(Image.fromarray(picked[0]), info, height, width, reference_size,
                                          name=repr(path))
    out_h, out_w = first.shape[:2]
    if (out_h, out_w) != (src_h, src_w):
        picked = resize_cover_crop_frames(picked, out_h, out_w)
        info["preprocessing"] = f"resized and center-cropped {src_w}x{src_h} -> {out_w}x{out_h}"
    return picked, info, warnings


def video_to_array(video) -> np.ndarray:
    """uint8 (T, H, W, 3) frames or float (T, 3, H, W) in [-1, 1] -> float32 (T, 3, H, W) in [-1, 1]."""
    array = np.asarray(video)
    if array.dtype == np.uint8:
        if array.ndim != 4 or array.shape[3] != 3:
            raise InputError(f"uint8 video must be (T, H, W, 3), got shape {array.shape}")
        array = array.astype(np.float32).transpose(0, 3, 1, 2) / 127.5 - 1.0
    elif array.ndim != 4 or array.shape[1] != 3:
        raise InputError(f"float video must be (T, 3, H, W) in [-1, 1], got shape {array.shape}")
    return np.ascontiguousarray(array, np.float32)
