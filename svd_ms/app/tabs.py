"""The page's controls for each kind of run beyond a plain image to video: the orbit's camera
table, its drawing and the cut-out preview (SV3D), the video-to-video clip, the LoRA picker and
the sampling presets; and the rules that turn their values into a request. Built only for a model
that supports them (svd_ms.app.capabilities)."""
import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .. import sv3d
from ..errors import ImageError, InputError, ParamError
from ..preparation import prepare_input
from .capabilities import FAST_STEPS, QUALITY_STEPS
from .uploads import check_upload

CAMERA_HEADERS = ["elevation (deg)", "azimuth (deg)"]
LORA_HEADERS = ["adapter", "scale"]
PLOT_SIDE = 220
PRESETS = {"quality": {"steps": QUALITY_STEPS, "sampler": None}, "fast": {"steps": FAST_STEPS, "sampler": "lcm"}}


def preset_choices(fast: bool) -> List[Tuple[str, str]]:
    choices = [(f"quality: {QUALITY_STEPS} steps", "quality")]
    return choices + ([(f"fast: {FAST_STEPS} steps (consistency sampler)", "fast")] if fast else [])


# ---- orbit -----------------------------------------------------------------------------------
def default_camera(num_frames: int) -> List[List[float]]:
    """sv3d_p's default path (svd_ms.sv3d.camera_path) as table rows."""
    path = sv3d.camera_path(num_frames)
    return [[float(e), float(a)] for e, a in zip(path["elevations_deg"], path["azimuths_deg"])]


def camera_from_table(table) -> Dict[str, List[float]]:
    """The table's rows as elevations_deg and azimuths_deg; a cell that is not a number is named."""
    rows = table.values.tolist() if hasattr(table, "values") else list(table or [])
    elevations, azimuths = [], []
    for i, row in enumerate(rows):
        if all(v in (None, "") for v in row):
            continue
        for column, value, out in zip(CAMERA_HEADERS, row, (elevations, azimuths)):
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise ParamError("camera", f"view {i + 1}: {column} must be a number, got {value!r}") from None
            if not math.isfinite(number):
                raise ParamError("camera", f"view {i + 1}: {column} must be finite, got {value!r}")
            out.append(number)
    if not elevations:
        raise ParamError("camera", "the camera table is empty: give one row per view")
    return {"elevations_deg": elevations, "azimuths_deg": azimuths}


def draw_camera_path(camera: Dict[str, Sequence[float]]):
    """A small top view of the orbit: azimuth as the angle around the object, elevation as the
    distance from the rim (the pole at the centre); views joined in order, the first in green."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (PLOT_SIDE, PLOT_SIDE), "white")
    draw = ImageDraw.Draw(img)
    c, r = PLOT_SIDE / 2, PLOT_SIDE / 2 - 12
    draw.ellipse([c - r, c - r, c + r, c + r], outline=(180, 180, 180))
    draw.ellipse([c - r / 2, c - r / 2, c + r / 2, c + r / 2], outline=(225, 225, 225))  # elevation 45
    draw.ellipse([c - 5, c - 5, c + 5, c + 5], fill=(90, 90, 90))  # the object
    points = []
    for e, a in zip(camera["elevations_deg"], camera["azimuths_deg"]):
        dist = r * (90.0 - max(-90.0, min(90.0, e))) / 90.0
        points.append((c + dist * math.sin(math.radians(a)), c - dist * math.cos(math.radians(a))))
    if len(points) > 1:
        draw.line(points, fill=(60, 110, 200), width=2)
    for i, (x, y) in enumerate(points):
        colour = (40, 160, 60) if i == 0 else (60, 110, 200)
        draw.ellipse([x - 4, y - 4, x + 4, y + 4], fill=colour)
    return img


def orbit_input(path: str, limits, keep_background: bool, side: Optional[int]) -> Tuple[np.ndarray, Dict, list]:
    """What the SV3D model will see: the upload checked like every upload, then prepared by the
    command line's SV3D rule (svd_ms.preparation: a cut-out recentred on white; a picture without
    transparency has its background removed, or is kept with keep_background)."""
    _, info = check_upload(path, limits)
    if side is not None and (side < 64 or side % 64):
        raise ParamError("height", f"view size={side} must be a multiple of 64 (64, 128, ..., 1024)")
    try:
        prepared = prepare_input(path, orbit=True, height=side, width=side, keep_background=bool(keep_background))
    except InputError as exc:
        raise ImageError(_named(str(exc), path, info["path"])) from None
    warnings = [_named(w, path, info["path"]) for w in prepared.warnings]
    return prepared.pixels, {**info, **prepared.info, "path": info["path"]}, warnings


def _named(text: str, path: str, name: str) -> str:
    """A message about the server's copy of an upload, naming it as the visitor did."""
    import os
    return text.replace(repr(path), repr(name)).replace(path, name).replace(repr(os.path.basename(path)), repr(name))


# ---- LoRA ------------------------------------------------------------------------------------
def lora_rows(names: Sequence[str]) -> List[List[Any]]:
    return [[name, 0.0] for name in names]


def lora_picks(table) -> List[Tuple[str, float]]:
    """(adapter, scale) of every row whose scale is not 0 (0: not used)."""
    rows = table.values.tolist() if hasattr(table, "values") else list(table or [])
    picks = []
    for row in rows:
        if not row or row[0] in (None, ""):
            continue
        name, scale = row[0], row[1] if len(row) > 1 else 0
        try:
            scale = float(scale if scale not in (None, "") else 0)
        except (TypeError, ValueError):
            raise ParamError("lora", f"LoRA adapter {name!r}: scale must be a number, got {scale!r}") from None
        if scale != 0:
            picks.append((str(name), scale))
    return picks


def lora_table(names: Sequence[str], picks: Sequence[Tuple[str, float]]) -> List[List[Any]]:
    """The picker's rows with the scales of `picks` (for "use these settings again")."""
    chosen = dict(picks)
    return [[name, float(chosen.get(name, 0.0))] for name in names]

