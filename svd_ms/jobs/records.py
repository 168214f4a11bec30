"""The batch job's side of svd_ms.record: which job flags belong to a video's settings, the
reproduce command of one input, and the sidecar of one input (with its place in the job)."""
import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np

from .. import record
from ..params import SVDParams
from .settings import JobSettings


class JobRecords:
    """Builds the settings, reproduce command and sidecar of each input of one job.

    `condition_image` (video-to-video: the one conditioning image of every video) is set once the
    inputs are resolved; `context` is `record.run_context(...)`, shared by every record."""

    def __init__(self, params: SVDParams, settings: JobSettings, orbit: bool, device_target: str):
        self.params = params
        self.settings = settings
        self.orbit = orbit
        self.device_target = device_target
        self.condition_image: Optional[str] = None

    def output_settings(self) -> Dict[str, Any]:
        """The job flags that change the video (the others: where it goes, how it is reported)."""
        s = self.settings
        out: Dict[str, Any] = {"height": s.height, "width": s.width, "output_format": s.output_format}
        if s.videos:
            out["condition_image"] = self.condition_image
        if self.orbit:
            out.update(elevations_deg=s.elevations_deg, azimuths_deg=s.azimuths_deg,
                       keep_background=s.keep_background, image_frame_ratio=s.image_frame_ratio)
        return out

    def video_settings(self) -> Dict[str, Any]:
        """What the videos of this job are made with: compared on resume, recorded in each sidecar."""
        return record.video_settings(self.params, self.output_settings())

    def inputs(self, path: str) -> List[Tuple[str, str]]:
        """The input flags of one input's reproduce command, with absolute paths."""
        path = os.path.abspath(path)
        if self.settings.kind == "video":
            return [("video", path)] + ([("image", self.condition_image)] if self.condition_image else [])
        return [("image", path)]

    def reproduce(self, path: str, seed: int) -> str:
        s = self.settings
        flags = {"height": s.height, "width": s.width, "image_frame_ratio": s.image_frame_ratio,
                 "elevations_deg": s.elevations_deg, "azimuths_deg": s.azimuths_deg,
                 "keep_background": True if s.keep_background else None, "mode": s.mode,
                 "device_target": self.device_target, "seed": seed, "output_format": s.output_format,
                 "output_dir": os.path.abspath(s.output_dir)}
        return record.reproduce_command(self.params, self.inputs(path), flags)

    def new(self, entry: Mapping[str, Any], frames: np.ndarray, info: Mapping[str, Any], result, untrained: bool,
            resolved: Optional[Mapping[str, Any]], context: Mapping[str, Any], rank: int,
            world_size: int) -> Dict[str, Any]:
        """The sidecar of one input about to be written (status 'writing')."""
        seed = getattr(result, "seed", None)
        seed = entry["seed"] if seed is None else int(seed)  # the seed the pipeline actually used
        extra: Dict[str, Any] = {}
        if getattr(result, "camera", None):
            extra["camera"] = {k: np.asarray(v).tolist() for k, v in result.camera.items()}
        return record.new_record(
            video_path=Path(entry["output"]), output_format=self.settings.output_format, frames=frames,
            fps=self.params.fps, seed=seed, params=self.params, settings=self.video_settings(), resolved=resolved,
            input_info=info, untrained=untrained, reproduce=self.reproduce(entry["image"], seed), context=context,
            source="command line", input_kind=self.settings.kind, base_seed=entry["base_seed"],
            index_in_job=entry["index"], parameters=self.settings.parameters, rank=rank, world_size=world_size,
            **extra)
