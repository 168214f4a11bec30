"""SV4D 2.0: new views of an object's video (upstream `scripts/sampling/simple_video_sample_4d2.py`).

What the sampling script fixes outside the model config lives here: its per-model settings
(frames and views per chunk, guidance, default camera), the camera inputs, the chunk schedule,
and the preparation of the input frames. The sampling itself is `svd_ms.pipelines.sv4d2`.
"""
import numbers
import os
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np

from . import media
from .errors import InputError
from .sv3d import camera_path

IMAGE_SIZE = 576
NUM_STEPS = 50
ENCODING_T = 8
DECODING_T = 4
IMAGE_FRAME_RATIO = 0.9
SIGMA_MIN, SIGMA_MAX, RHO = 0.002, 700.0, 7.0
# preprocess_video: a pixel of an RGB frame is background when its channel mean is above this.
WHITE_THRESHOLD = 250
FRAME_EXTS = (".jpg", ".jpeg", ".png")
MAX_INPUT_FRAMES = 2000


@dataclass(frozen=True)
class ScriptEntry:
    """One entry of the script's `sv4d2_configs`, for the views a config's model makes."""
    name: str
    guider: str  # LinearPredictionGuider or SpatiotemporalPredictionGuider
    cfg: float
    min_cfg: float
    default_azimuths_deg: Tuple[float, ...]  # view 0 (the input) first


ENTRIES = {
    4: ScriptEntry("sv4d2", "LinearPredictionGuider", 2.0, 1.0, (0, 60, 120, 180, 240)),
    8: ScriptEntry("sv4d2_8views", "SpatiotemporalPredictionGuider", 2.5, 1.5,
                   (0, 30, 75, 120, 165, 210, 255, 300, 330)),
}


def chunk_layout(model_config) -> Tuple[int, int]:
    """(T frames, V views) of a chunk, from an SV4D 2.0 config's N_TIME and N_VIEW."""
    if "N_TIME" not in model_config or "N_VIEW" not in model_config:
        raise InputError("an SV4D 2.0 config sets N_TIME and N_VIEW (frames and views per chunk)")
    return int(model_config.N_TIME), int(model_config.N_VIEW)


def script_entry(num_views: int) -> ScriptEntry:
    """The settings upstream's script uses for a model making `num_views` novel views. The
    4-view entry's guider (LinearPredictionGuider) never receives its `min_cfg` (2.0), so 1.0
    is its effective minimum."""
    if num_views not in ENTRIES:
        raise InputError(f"SV4D 2.0 configs make 4 or 8 views (N_VIEW), this one makes {num_views}")
    return ENTRIES[num_views]


def guider_config(entry: ScriptEntry, chunk_frames: int, num_views: int, cfg: Optional[float] = None) -> dict:
    params = {"max_scale": entry.cfg if cfg is None else float(cfg), "min_scale": entry.min_cfg,
              "num_frames": chunk_frames * num_views, "additional_cond_keys": ["cond_view", "cond_motion"]}
    if entry.guider == "SpatiotemporalPredictionGuider":
        params["num_views"] = num_views
    return {"target": f"svd_ms.modules.diffusionmodules.guiders.{entry.guider}", "params": params}


# ---- camera ----------------------------------------------------------------------------------

def view_angles(num_views: int, entry: ScriptEntry, elevations_deg=None, azimuths_deg=None) -> dict:
    """The V + 1 camera angles (view 0 is the input) as sv3d.camera_path converts them:
    elevations one value or one per view (default 0), azimuths one per view (default the
    script's)."""
    n = num_views + 1
    for name, value in (("elevations_deg", elevations_deg), ("azimuths_deg", azimuths_deg)):
        if value is not None and not isinstance(value, numbers.Real) and np.size(value) != n:
            raise InputError(f"{name}: give {'one number or ' if name.startswith('elev') else ''}{n} numbers "
                             f"(view 0, the input, then the {num_views} new views), got {np.size(value)}")
    if azimuths_deg is not None and isinstance(azimuths_deg, numbers.Real):
        raise InputError(f"azimuths_deg: give {n} numbers (view 0, the input, then the {num_views} new views)")
    elevations = 0.0 if elevations_deg is None else elevations_deg
    azimuths = np.array(entry.default_azimuths_deg) if azimuths_deg is None else azimuths_deg
    return camera_path(n, elevations, azimuths)


def chunk_camera(angles: dict, chunk_frames: int) -> Tuple[np.ndarray, np.ndarray]:
    """float64 (T*V,) polar and azimuth inputs of a chunk, t-major, relative to view 0."""
    polars, azimuths = angles["polars_rad"], angles["azimuths_rad"]
    polar = (np.tile(polars[1:], chunk_frames) - polars[0] + np.pi / 2) % (np.pi * 2)
    azimuth = (np.tile(azimuths[1:], chunk_frames) - azimuths[0]) % (np.pi * 2)
    return polar, azimuth


# ---- chunk schedule --------------------------------------------------------------------------

def chunk_starts(num_frames: int, chunk_frames: int) -> List[int]:
    """The first frame of each chunk. A later chunk starts on the last frame of the one before
    (its views there condition it) and a chunk that would pass the end is moved back to end on
    the last frame. This is upstream's schedule wherever upstream's works (the 4-view script for
    fewer than 2T frames, the 8-view script when its chunks reach the last frame), and it covers
    every frame where upstream fails (4 views, 2T frames or more) or drops frames (8 views)."""
    if num_frames < chunk_frames:
        raise ValueError(f"{num_frames} frames are fewer than a chunk ({chunk_frames}); pad them first")
    starts, start = [], 0
    while True:
        start = min(start, num_frames - chunk_frames)
        starts.append(start)
        if start + chunk_frames >= num_frames:
            return starts
        start += chunk_frames - 1


def pad_to_chunk(frames: np.ndarray, chunk_frames: int) -> np.ndarray:
    """Fewer frames than a chunk: extended forwards-then-backwards as upstream's read_video does,
    repeated until a chunk is full (the extra frames are sampled and then dropped)."""
    while len(frames) < chunk_frames:
        frames = np.concatenate([frames, frames[::-1]])[:chunk_frames]
    return frames


# ---- input frames ----------------------------------------------------------------------------

def read_frames(source, max_frames: Optional[int] = None) -> List:
    """The input frames as PIL images: a video file, a folder of .jpg/.jpeg/.png frames (sorted
    by name), a list of paths / PIL images / uint8 arrays, or a uint8 (N, H, W, 3|4) array.
    `max_frames` keeps the first frames only, as upstream's `n_frames` does."""
    from PIL import Image
    if max_frames is not None and (isinstance(max_frames, bool) or not isinstance(max_frames, int) or max_frames < 1):
        raise InputError(f"max_frames must be a positive integer, got {max_frames!r}")
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if os.path.isdir(path):
            names = sorted(f for f in os.listdir(path)
                           if f.lower().endswith(FRAME_EXTS) and os.path.isfile(os.path.join(path, f)))
            if not names:
                raise InputError(f"folder {path!r} holds no .jpg/.jpeg/.png frames")
            images = [media.open_image_as_stored(os.path.join(path, n))[0] for n in names[:max_frames]]
        elif os.path.exists(path):
            images = [Image.fromarray(f) for f in _video_frames(path, max_frames)]
        else:
            raise InputError(f"input {path!r} does not exist")
    elif isinstance(source, np.ndarray):
        if source.dtype != np.uint8 or source.ndim != 4 or source.shape[3] not in (3, 4):
            raise InputError(f"frames array must be uint8 (N, H, W, 3|4), got {source.dtype} {source.shape}")
        images = [Image.fromarray(f) for f in source[:max_frames]]
    elif isinstance(source, Sequence) and not isinstance(source, (str, bytes)):
        images = [_one_frame(item) for item in list(source)[:max_frames]]
    else:
        raise InputError(f"frames must be a video path, a folder, a list of images or a uint8 array, "
                         f"got {type(source).__name__}")
    if not images:
        raise InputError("no input frames")
    sizes = {im.size for im in images}
    if len(sizes) > 1:
        raise InputError(f"input frames differ in size ({', '.join(f'{w}x{h}' for w, h in sorted(sizes))})")
    return images


def _one_frame(item):
    from PIL import Image
    if isinstance(item, (str, os.PathLike)):
        return media.open_image_as_stored(os.fspath(item))[0]
    if isinstance(item, np.ndarray) and item.dtype == np.uint8 and item.ndim == 3 and item.shape[2] in (3, 4):
        return Image.fromarray(item)
    if hasattr(item, "convert") and hasattr(item, "size"):
        return item
    raise InputError(f"a frame must be a path, a PIL image or a uint8 HxWx3|4 array, got {type(item).__name__}")


def _video_frames(path: str, max_frames: Optional[int]):
    meta = media.probe_video(path)
    _, reader, frames = media._video_frames(path, meta["demuxer"])
    kept = []
    try:
        for frame in frames:
            kept.append(frame.copy())
            if len(kept) == (max_frames or MAX_INPUT_FRAMES + 1):
                break
    finally:
        reader.close()
    if max_frames is None and len(kept) > MAX_INPUT_FRAMES:
        raise InputError(f"{path!r}: more than {MAX_INPUT_FRAMES} frames; trim it or pass a frame limit")
    if not kept:
        raise InputError(f"{path!r}: the video has no frames")
    return kept


def _foreground_box(image) -> Tuple[int, int, int, int]:
    """(x, y, w, h) of the non-background pixels (cv2.boundingRect's convention): alpha > 0 for
    an RGBA frame, a channel mean <= 250 for an RGB one (an object on white)."""
    arr = np.array(image)
    mask = arr[..., 3] > 0 if image.mode == "RGBA" else np.array(image).mean(-1) <= WHITE_THRESHOLD
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        return 0, 0, 0, 0
    return int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)


def preprocess_frames(images, size: int = IMAGE_SIZE, image_frame_ratio: Optional[float] = IMAGE_FRAME_RATIO,
                      keep_background: bool = False) -> np.ndarray:
    """uint8 (N, size, size, 3) model frames, as upstream's `preprocess_video` makes them: one
    square box around the object in every frame, centred on the frame centre, padded to
    box / image_frame_ratio, LANCZOS-resized, composited on white and truncated to uint8.
    The box arithmetic is upstream's, axis mix-ups included. `keep_background`: each frame
    centre-cropped to a square and resized instead."""
    from PIL import Image
    if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 64 or size % 64:
        raise InputError(f"image size must be a positive multiple of 64, got {size!r}")
    if keep_background:
        return np.stack([np.array(_centre_square(im.convert("RGB"), size)) for im in images])
    images = [im if im.mode in ("RGB", "RGBA") else im.convert("RGBA" if "A" in im.mode else "RGB")
              for im in images]
    arr_shape = np.array(images[-1]).shape
    centre = (arr_shape[0] // 2, arr_shape[1] // 2)
    boxes = np.array([_foreground_box(im) for im in images])
    if not boxes[:, 2].any():
        raise InputError("the input frames show no object (every pixel is background: white, or transparent)")
    left, top = boxes[:, 0].min(), boxes[:, 1].min()
    right, bottom = (boxes[:, 0] + boxes[:, 2]).max(), (boxes[:, 1] + boxes[:, 3]).max()
    # An empty frame's box is (0, 0, 0, 0), which pulls the union to the corner: upstream's rule.
    half = int(max(centre[0] - left, centre[1] - top, right - centre[0], bottom - centre[1]))
    x, y = max(0, centre[0] - half), max(0, centre[1] - half)
    w, h = min(arr_shape[0], 2 * half), min(arr_shape[1], 2 * half)
    box = 2 * half
    side = int(box / image_frame_ratio) if image_frame_ratio is not None else arr_shape[0]
    out = []
    for im in images:
        arr = np.array(im.convert("RGBA"))
        canvas = np.zeros((side, side, 4), np.uint8)
        mid = side // 2
        bw, bh = min(w, box), min(h, box)
        crop = arr[x:x + w, y:y + h]
        if canvas[mid - bw // 2:mid - bw // 2 + bw, mid - bh // 2:mid - bh // 2 + bh].shape != crop.shape:
            raise InputError("the object reaches the frame's edge in a way upstream's framing cannot place; "
                             "use keep_background")
        canvas[mid - bw // 2:mid - bw // 2 + bw, mid - bh // 2:mid - bh // 2 + bh] = crop
        rgba = np.array(Image.fromarray(canvas).resize((size, size), Image.LANCZOS)) / 255.0
        rgb = rgba[..., :3] * rgba[..., -1:] + (1 - rgba[..., -1:])
        out.append((rgb * 255).astype(np.uint8))
    return np.stack(out)


def _centre_square(im, size: int):
    from PIL import Image
    w, h = im.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    return im.crop((left, top, left + side, top + side)).resize((size, size), Image.LANCZOS)


def frames_to_model(frames: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W, 3) -> float32 (N, 3, H, W) in [-1, 1], as ToTensor() * 2 - 1 computes it."""
    x = frames.astype(np.float32).transpose(0, 3, 1, 2) / np.float32(255.0)
    return np.ascontiguousarray(x * np.float32(2.0) - np.float32(1.0))


def to_video_uint8(images: np.ndarray) -> np.ndarray:
    """float (N, 3, H, W) in [-1, 1] -> uint8 (N, H, W, 3), truncated as upstream's save_video."""
    x = (np.asarray(images, np.float32) + np.float32(1.0)) / np.float32(2.0)
    return (x.transpose(0, 2, 3, 1) * np.float32(255.0)).astype(np.uint8)
