"""What a job is asked to do besides the model settings (SVDParams), and the checks on it: the
inputs, the output folder and names, the seed, and the flags that only some models take."""
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from .. import sv3d
from ..errors import InputError, ParamError, UsageError
from ..media import VIDEO_EXTS, VIDEO_FORMATS, resolve_images
from ..params import SVDParams
from ..record import param_defaults
from ..seeds import check_seed
from .console import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_SETUP, warn  # noqa: F401 (exit codes re-exported)


@dataclass
class JobSettings:
    """What a job does besides the model settings (SVDParams): which images, where the results go."""
    images: Sequence[str]
    output_dir: str = "outputs"
    # Video-to-video inputs; `images` is then the conditioning image of every video (at most one).
    videos: Sequence[str] = ()
    output_format: str = "mp4"
    seed: Optional[int] = None
    overwrite: bool = False
    height: Optional[int] = None
    width: Optional[int] = None
    progress: bool = True
    dist_timeout: float = 900.0
    mode: int = 0
    mode_chosen: bool = False  # the mode is the device's default, not a --mode flag
    # SV3D (orbit models): the camera path of sv3d_p, and how the input is prepared.
    elevations_deg: Optional[Union[float, List[float]]] = None
    azimuths_deg: Optional[List[float]] = None
    keep_background: bool = False
    image_frame_ratio: Optional[float] = None
    # The flags as given, recorded in each sidecar.
    parameters: Dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        if not self.images and not self.videos:
            raise UsageError("nothing to do: give --image (images to animate) or --video (videos to restyle)")
        if self.videos and len(self.images) > 1:
            raise UsageError("--image with --video: give one image (the conditioning image of every video) or none "
                             "(each video's first frame)")
        if self.output_format not in VIDEO_FORMATS:
            raise UsageError(f"--output_format={self.output_format}: must be one of {', '.join(VIDEO_FORMATS)}")
        if not self.dist_timeout > 0:
            raise UsageError(f"--dist_timeout={self.dist_timeout} must be a positive number of seconds")
        if self.seed is not None:
            try:
                check_seed(self.seed)
            except ParamError as exc:
                raise UsageError(f"--{exc}") from None
        for name in ("height", "width"):
            value = getattr(self, name)
            if value is not None and (value < 64 or value % 64):
                raise UsageError(f"--{name}={value} must be a positive multiple of 64")

    @property
    def kind(self) -> str:
        """What the inputs are: 'image' (image-to-video) or 'video' (video-to-video)."""
        return "video" if self.videos else "image"


def check_model_flags(settings: JobSettings, params: SVDParams, orbit: bool) -> None:
    """Flags that do not fit the model kind, refused (or warned about) before any image runs."""
    s = settings
    if orbit:
        defaults = param_defaults()
        ignored = [f"--SVD.{name}" for name in ("fps", "motion_bucket_id") if getattr(params, name) != defaults[name]]
        if ignored:
            warn(f"{' and '.join(ignored)} not used: this SV3D model is not conditioned on fps or motion")
        if s.height is not None and s.width is not None and s.height != s.width:
            raise UsageError(f"--height={s.height} --width={s.width}: SV3D makes square views; give one side")
    elif s.keep_background or s.image_frame_ratio is not None:
        raise UsageError("--keep_background and --image_frame_ratio prepare SV3D inputs; this model is not SV3D")


def check_camera(input_keys, num_frames: int, settings: JobSettings) -> None:
    """The camera flags against the frame count the pipeline resolved; UsageError names the flag."""
    try:
        sv3d.resolve_camera(input_keys, num_frames, settings.elevations_deg, settings.azimuths_deg)
    except InputError as exc:
        raise UsageError(f"--{exc}" if str(exc).split(":")[0] in ("elevations_deg", "azimuths_deg")
                         else str(exc)) from None


def output_paths(output_dir: Path, image: str, seed: int, fmt: str) -> Tuple[Path, Path]:
    """(video, sidecar) of one input: `<stem>_seed<seed>.<ext>` and `<stem>_seed<seed>.json`."""
    base = f"{Path(image).stem}_seed{seed}"
    return output_dir / (base if fmt == "png" else f"{base}.{fmt}"), output_dir / f"{base}.json"


def check_output_dir(path: str, rank: int = 0) -> Path:
    """The output folder, created and tried for writing; UsageError names what is wrong."""
    out = Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--output_dir: cannot create {str(out)!r} ({exc.strerror or exc})") from None
    if not out.is_dir():
        raise UsageError(f"--output_dir: {str(out)!r} is not a directory")
    probe = out / f".write_test.{os.getpid()}.{rank}"
    try:
        with open(probe, "wb") as f:
            f.write(b"ok")
        os.remove(probe)
    except OSError as exc:
        raise UsageError(f"--output_dir: {str(out)!r} is not writable ({exc.strerror or exc})") from None
    return out


def resolve_inputs(settings: JobSettings, params: SVDParams) -> Tuple[List[str], List[Tuple[str, str]], Optional[str]]:
    """(the sorted input list, its problems, the conditioning image): images, or videos with at most
    one conditioning image for all of them, whose problems stop the job (it belongs to every video)."""
    s = settings
    if params.strength is not None and not s.videos:
        raise UsageError("--SVD.strength applies to --video inputs only")
    if not s.videos:
        return (*resolve_images(s.images), None)
    if params.num_clips > 1:
        raise UsageError("--SVD.num_clips > 1 chains clips from an image; with --video give one clip (num_clips=1)")
    condition_image = None
    if s.images:
        found, problems = resolve_images(s.images)
        if problems or len(found) != 1:
            why = problems[0][1] if problems else f"{len(found)} images found"
            raise UsageError(f"--image with --video must name one conditioning image ({why})")
        condition_image = os.path.abspath(found[0])
    return (*resolve_images(s.videos, VIDEO_EXTS, "video"), condition_image)
