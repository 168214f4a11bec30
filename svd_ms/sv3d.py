"""SV3D: orbit views of an object from one image (upstream sv3d_u, sv3d_p).

The engine is SVD's; what SV3D adds lives here: which configs are orbit models, their sampling
defaults, the camera path of sv3d_p in the form its conditioner takes, and the preparation of
the input picture (a cut-out of the object, centred on white), all as upstream's
`scripts/sampling/simple_video_sample.py` does them.
"""
import numbers
import os
from typing import Dict, Iterable, Optional, Sequence, Union

import numpy as np

from . import media
from .errors import InputError

# Upstream's sampling script fixes these for SV3D instead of reading them from the config.
NUM_FRAMES = 21
NUM_STEPS = 50
COND_AUG = 1e-5
IMAGE_SIZE = 576
DEFAULT_ELEVATION_DEG = 10.0
# rembg runs on an image no larger than this, as upstream does before removing the background.
REMBG_MAX_SIDE = 768

SVD_ONLY_KEYS = ("fps_id", "motion_bucket_id")
CAMERA_KEYS = ("polars_rad", "azimuths_rad")

Angles = Union[float, Sequence[float], None]


def conditioner_input_keys(model_config) -> list:
    """The input keys of a config's conditioner, read before anything is built (defaults such
    as the clip length must be known when the guider is constructed)."""
    conditioner = model_config.params.get("conditioner_config", None)
    if conditioner is None:
        return []
    return [str(e["input_key"]) for e in conditioner.get("params", {}).get("emb_models", [])]


def is_orbit_model(input_keys: Iterable[str]) -> bool:
    """An SV3D conditioner: the image and its noisy latent without SVD's fps and motion inputs."""
    keys = set(input_keys)
    return "cond_frames" in keys and not keys & set(SVD_ONLY_KEYS)


def takes_camera(input_keys: Iterable[str]) -> bool:
    return set(CAMERA_KEYS) <= set(input_keys)


def _numbers(value, name: str) -> np.ndarray:
    items = np.ravel(np.asarray(value, dtype=object)) if not isinstance(value, str) else [value]
    for item in items:
        if isinstance(item, bool) or not isinstance(item, numbers.Real) or not np.isfinite(float(item)):
            raise InputError(f"{name}: {item!r} is not a number (angles are in degrees)")
    return np.array([float(v) for v in items], np.float64)


def _is_scalar(value) -> bool:
    return isinstance(value, numbers.Real) or (isinstance(value, np.ndarray) and value.ndim == 0)


def camera_path(num_frames: int, elevations_deg: Angles = None, azimuths_deg: Angles = None) -> Dict[str, np.ndarray]:
    """The sv3d_p camera of each frame, as upstream converts it.

    elevations_deg: one value for every frame or one per frame (default 10); the conditioner
        gets the polar angle 90 - elevation, in radians.
    azimuths_deg: one per frame (default: evenly spaced over 360, the last at 0); the conditioner
        gets each azimuth relative to the last frame's, modulo 360, in radians, in the order given.
    Returns float64 arrays: the angles in degrees as resolved, and `polars_rad`, `azimuths_rad`.
    """
    if elevations_deg is None:
        elevations_deg = DEFAULT_ELEVATION_DEG
    if _is_scalar(elevations_deg):
        elevations = np.full(num_frames, _numbers(elevations_deg, "elevations_deg")[0])
    else:
        elevations = _numbers(elevations_deg, "elevations_deg")
        if elevations.size != num_frames:
            raise InputError(f"elevations_deg: give one number or {num_frames} (one per frame), "
                             f"got {elevations.size}")
    if azimuths_deg is None:
        azimuths = np.linspace(0, 360, num_frames + 1)[1:] % 360
    else:
        if _is_scalar(azimuths_deg):
            raise InputError(f"azimuths_deg: give {num_frames} numbers (one per frame), got one")
        azimuths = _numbers(azimuths_deg, "azimuths_deg")
        if azimuths.size != num_frames:
            raise InputError(f"azimuths_deg: give {num_frames} numbers (one per frame), got {azimuths.size}")
    return {
        "elevations_deg": elevations,
        "azimuths_deg": azimuths,
        "polars_rad": np.deg2rad(90.0 - elevations),
        "azimuths_rad": np.deg2rad((azimuths - azimuths[-1]) % 360),
    }


def resolve_camera(input_keys: Iterable[str], num_frames: int, elevations_deg: Angles = None,
                   azimuths_deg: Angles = None) -> Optional[Dict[str, np.ndarray]]:
    """The camera path for a model whose conditioner takes one, else None; a camera given to a
    model without camera inputs is an error rather than silently ignored."""
    if takes_camera(input_keys):
        return camera_path(num_frames, elevations_deg, azimuths_deg)
    given = [name for name, value in (("elevations_deg", elevations_deg), ("azimuths_deg", azimuths_deg))
             if value is not None]
    if given:
        raise InputError(f"{' and '.join(given)}: this model takes no camera path "
                         f"(its conditioner has no {'/'.join(CAMERA_KEYS)} input; use an sv3d_p config)")
    return None


# ---- input preparation ---------------------------------------------------------------------

def _open(image):
    from PIL import Image
    if isinstance(image, (str, os.PathLike)):
        return media.open_image_as_stored(os.fspath(image))[0], f"image {os.fspath(image)!r}"
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] not in (3, 4):
            raise InputError(f"image array must be uint8 HxWx3 or HxWx4, got {image.dtype} {image.shape}")
        return Image.fromarray(image), "image"
    if hasattr(image, "convert") and hasattr(image, "size"):
        return image, "image"
    raise InputError(f"image must be a path, a PIL image or a uint8 array, got {type(image).__name__}")


def _has_alpha(im) -> bool:
    return im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (im.mode == "P" and "transparency" in im.info)


def _on_white(rgba) -> "Image.Image":
    from PIL import Image
    a = np.array(rgba.convert("RGBA")) / 255.0
    rgb = a[..., :3] * a[..., 3:] + (1 - a[..., 3:])
    return Image.fromarray((rgb * 255).astype(np.uint8))


def recentre_cutout(rgba, size: int = IMAGE_SIZE, image_frame_ratio: Optional[float] = None):
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
    return _on_white(Image.fromarray(canvas).resize((size, size), Image.LANCZOS))


def _centre_square(im, size: int):
    from PIL import Image
    w, h = im.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    return im.crop((left, top, left + side, top + side)).resize((size, size), Image.LANCZOS)


def rembg_model_path() -> str:
    """Where rembg keeps its u2net model (its own rule: $U2NET_HOME, else $XDG_DATA_HOME/.u2net,
    else ~/.u2net)."""
    home = os.getenv("U2NET_HOME", os.path.join(os.getenv("XDG_DATA_HOME", "~"), ".u2net"))
    return os.path.join(os.path.expanduser(home), "u2net.onnx")


def remove_background(im, source: str = "image"):
    """RGBA cut-out of an RGB picture with rembg (as upstream: at most 768 px, alpha matting),
    only when rembg is installed and its model is already on disk: nothing is downloaded."""
    from PIL import Image
    refusal = (f"{source} has no alpha channel: pass an RGBA cut-out of the object, or keep_background=True "
               f"(--keep_background) to use the picture as it is, centre-cropped to a square")
    try:
        import rembg
        from rembg.sessions.u2net import U2netSession
    except ImportError:
        raise InputError(f"{refusal} (background removal needs rembg, which is not installed)") from None
    model = rembg_model_path()
    if not os.path.isfile(model):
        raise InputError(f"{refusal} (rembg's model {model} is not on disk and is never downloaded)")

    class OnDiskU2net(U2netSession):
        @classmethod
        def download_models(cls, *args, **kwargs):
            return model

    try:
        import onnxruntime
        session = OnDiskU2net("u2net", onnxruntime.SessionOptions())
        im = im.convert("RGB")
        im.thumbnail((REMBG_MAX_SIDE, REMBG_MAX_SIDE), Image.Resampling.LANCZOS)
        return rembg.remove(im.convert("RGBA"), alpha_matting=True, session=session)
    except Exception as exc:
        raise InputError(f"{source}: background removal with rembg failed ({str(exc).splitlines()[0]})") from None


def prepare_image(image, size: int = IMAGE_SIZE, image_frame_ratio: Optional[float] = None,
                  keep_background: bool = False):
    """The SV3D input as upstream prepares it: an RGB PIL image of `size` x `size`.

    image: a path, a PIL image or a uint8 HxWx3/4 array. With an alpha channel it is a cut-out
        and is recentred by its alpha (`image_frame_ratio`: the object's share of the frame,
        in (0, 1]; default: upstream's framing) on white. Without one its background is removed
        with rembg if that is usable offline, else this refuses.
    keep_background: use the picture as it is (transparency flattened on white), centre-cropped
        to a square.
    """
    if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 64 or size % 64:
        raise InputError(f"image size must be a positive multiple of 64, got {size!r}")
    if image_frame_ratio is not None:
        if isinstance(image_frame_ratio, bool) or not isinstance(image_frame_ratio, numbers.Real) \
                or not 0 < image_frame_ratio <= 1:
            raise InputError(f"image_frame_ratio must be a number in (0, 1], got {image_frame_ratio!r}")
    im, source = _open(image)
    if keep_background:
        return _centre_square(_on_white(im) if _has_alpha(im) else im.convert("RGB"), size)
    rgba = im.convert("RGBA") if _has_alpha(im) else remove_background(im, source)
    return recentre_cutout(rgba, size, image_frame_ratio)
