"""What the pipelines hand back: the step a callback sees, one video, one clip of a chain."""
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

import numpy as np


@dataclass
class StepInfo:
    """What a step callback sees. `stage` is 'sampling' (one call per sampler step, with the
    step's sigma, the latents after it and `denoised`, the step's estimate of the clean latents,
    both scaled as the UNet sees them: what live previews show, svd_ms.app.preview) or 'decoding'
    (one call per decoded chunk)."""
    stage: str
    index: int
    total: int
    sigma: Optional[float] = None
    latents: Optional[Any] = None
    clip: int = 0  # the clip of a chain this step belongs to
    denoised: Optional[Any] = None


@dataclass
class VideoResult:
    """One generated video. `video`: float32 (T, 3, H, W) in [0, 1]; `frames`: the decoded frames
    in [-1, 1] before clamping; `latents`: the sampled latents (scaled, as the UNet sees them).
    `video` and `frames` are None when decoding was skipped (`output_type='latent'`). `seed` is
    the seed the run used, drawn when none was given. For SV3D, `decoded` is the decoder's output
    before the last frame is replaced by the input image, and `camera` the camera path
    (elevations_deg, azimuths_deg, polars_rad, azimuths_rad) of sv3d_p. `input` says how the
    conditioning image was prepared (svd_ms.preparation)."""
    latents: np.ndarray
    video: Optional[np.ndarray] = None
    frames: Optional[np.ndarray] = None
    decoded: Optional[np.ndarray] = None
    seed: Optional[int] = None
    params: Optional[Any] = None
    camera: Optional[Dict[str, np.ndarray]] = None
    timings: Dict[str, object] = field(default_factory=dict)
    input: Optional[Dict[str, Any]] = None

    def __getitem__(self, key):  # result["video"] reads like diffusers' outputs
        if self.camera is not None and key in self.camera:
            return self.camera[key]
        return getattr(self, key)

    def __contains__(self, key) -> bool:
        return (self.camera is not None and key in self.camera) or getattr(self, key, None) is not None


@dataclass
class ClipResult:
    """One finished clip of a chain, as `clip_callback` receives it and `finished_clips` takes it
    back. `condition`: the (1, 3, H, W) image in [-1, 1] the clip was conditioned on; `frames`:
    its decoded (T, 3, H, W) frames in [-1, 1] before clamping; `latents`: its sampled latents."""
    index: int
    seed: int
    condition: np.ndarray
    frames: np.ndarray
    latents: np.ndarray
    timings: Dict[str, object] = field(default_factory=dict)
