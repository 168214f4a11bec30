"""What the served model can do, so that the page shows only those controls, and the folder of
LoRA adapters a visitor may pick from (`--lora_dir`).

- image to video and chained clips: a model conditioned on fps and motion (every SVD);
- orbit: an SV3D model; per-view elevation and azimuth when its conditioner takes a camera (sv3d_p);
- video to video: the SVD models, as chained clips;
- the "fast: 4 steps" preset: the server was started with the consistency sampler
  (`--SVD.sampler=lcm`), the way AnimateLCM-style weights are served (docs/samplers.md): that flag
  is how the server knows the weights are consistency-distilled; on other weights 4 steps are noise;
- LoRA: `--lora_dir` given (adapters are merged into the UNet per request, svd_ms.lora.switch).
"""
import os
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from .. import sv3d
from ..errors import ParamError, UsageError

MOTION_KEYS = ("fps_id", "motion_bucket_id")
LORA_SUFFIX = ".safetensors"
QUALITY_STEPS, FAST_STEPS = 25, 4


@dataclass(frozen=True)
class Capabilities:
    image_to_video: bool
    orbit: bool
    camera: bool
    video_to_video: bool
    chained: bool
    fast_preset: bool
    lora: bool

    def kinds(self) -> List[str]:
        return [k for k, ok in (("image_to_video", self.image_to_video), ("orbit", self.orbit),
                                ("video_to_video", self.video_to_video)) if ok]


def capabilities_of(pipeline, sampler: Optional[str], lora_dir: Optional[str]) -> Capabilities:
    """The capabilities of a built pipeline (its conditioner's input keys); a stand-in without
    `input_keys` is taken as a plain SVD model."""
    keys = getattr(pipeline, "input_keys", None)
    keys = list(MOTION_KEYS) if keys is None else list(keys)
    motion = all(k in keys for k in MOTION_KEYS)
    orbit = bool(getattr(pipeline, "orbit", False)) or sv3d.is_orbit_model(keys)
    return Capabilities(image_to_video=motion and not orbit, orbit=orbit, camera=orbit and sv3d.takes_camera(keys),
                        video_to_video=motion and not orbit, chained=motion and not orbit,
                        fast_preset=sampler == "lcm", lora=lora_dir is not None)


class LoRAFolder:
    """The adapters a visitor may pick: the `.safetensors` files directly inside one folder, named
    by their file name. A request names a file by that name only; anything else (a path, a name
    not listed, a hidden file) is refused, so no request reaches a file outside the folder."""

    def __init__(self, folder: str):
        self.folder = Path(folder).resolve()
        if not self.folder.is_dir():
            raise UsageError(f"--lora_dir={folder}: not a folder")

    def names(self) -> List[str]:
        """The adapter files now in the folder, sorted (read again each time: new files appear)."""
        return sorted(e.name for e in os.scandir(self.folder)
                      if e.name.endswith(LORA_SUFFIX) and not e.name.startswith(".") and e.is_file())

    def path_of(self, name: str) -> str:
        if not isinstance(name, str) or name != os.path.basename(name) or "\\" in name or name not in self.names():
            raise ParamError("lora", f"LoRA adapter {name!r} is not one of the files in the server's LoRA folder")
        return str(self.folder / name)

    def check(self, picks: Sequence[Tuple[str, float]]) -> List[Tuple[str, float]]:
        """(name, scale) pairs checked: known names, each once, finite scales."""
        out, seen = [], set()
        for name, scale in picks:
            self.path_of(name)
            if name in seen:
                raise ParamError("lora", f"LoRA adapter {name!r} is picked twice")
            seen.add(name)
            try:
                scale = float(scale)
            except (TypeError, ValueError):
                raise ParamError("lora", f"LoRA adapter {name!r}: scale must be a number, got {scale!r}") from None
            if scale != scale or scale in (float("inf"), float("-inf")):
                raise ParamError("lora", f"LoRA adapter {name!r}: scale must be finite, got {scale}")
            out.append((name, scale))
        return out
