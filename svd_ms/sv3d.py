"""SV3D: orbit views of an object from one image (upstream sv3d_u, sv3d_p).

The engine is SVD's; what SV3D adds lives here: which configs are orbit models, their sampling
defaults and the camera path of sv3d_p in the form its conditioner takes, as upstream's
`scripts/sampling/simple_video_sample.py` does them. The input picture (a cut-out of the object,
centred on white) is prepared by svd_ms.preparation, like every other input.
"""
import numbers
from typing import Dict, Iterable, Optional, Sequence, Union

import numpy as np

from .errors import InputError

# Upstream's sampling script fixes these for SV3D instead of reading them from the config.
NUM_FRAMES = 21
NUM_STEPS = 50
COND_AUG = 1e-5
# The square view upstream prepares the input as (and the models were trained on).
IMAGE_SIZE = 576
DEFAULT_ELEVATION_DEG = 10.0

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
