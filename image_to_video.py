#!/usr/bin/env python
"""Turn still images into short videos with Stable Video Diffusion on MindSpore.

    python image_to_video.py --SVD.config=configs/svd.yaml \
        --SVD.checkpoint=checkpoints/svd.ckpt --image=photo.jpg

Longer videos chain clips (`--SVD.num_clips=3`); `--video=clip.mp4 --SVD.strength=0.6` restyles
an existing clip (video-to-video).

Run ``python image_to_video.py --help`` for every flag. The same command works unchanged under
``msrun``: each worker then takes its share of the images (README, "Many images on many devices").

Exit codes: 0 every image was produced (or already existed), 1 at least one image failed,
2 nothing could run (bad flags, unusable output directory, checkpoint or config problem),
130 interrupted (Ctrl-C or SIGTERM).
"""
import os

# MindSpore's C++ side logs warnings to stderr by default; keep only errors unless the user asked
# for something else. Must happen before mindspore is imported.
os.environ.setdefault("GLOG_v", "3")

import sys  # noqa: E402
from typing import Callable, List, Literal, Optional, Sequence, Union  # noqa: E402

from svd_ms.errors import ParamError, SVDError  # noqa: E402
from svd_ms.jobs.console import run_entry  # noqa: E402
from svd_ms.params import SVDParams  # noqa: E402


def build_parser():
    from jsonargparse import ActionConfigFile, ArgumentParser

    parser = ArgumentParser(
        prog="image_to_video.py",
        description="Stable Video Diffusion on MindSpore: one or more images in, one video per image out. Flags can "
        "also come from a YAML file given with --config; flags after --config override it. Under msrun every "
        "worker takes its share of the images.",
        env_prefix="SVD_CLI", default_env=False,
        exit_on_error=False,  # main() turns a flag error into one line, not usage + message
    )
    parser.add_argument("--config", action=ActionConfigFile,
                        help="YAML file holding any of these flags (e.g. the output of --print_config).")
    parser.add_class_arguments(SVDParams, "SVD", help="Model and sampling settings (svd_ms.params.SVDParams).")
    parser.add_argument("--image", type=str, nargs="+", default=[],
                        help="Input images: files, directories (their images, not recursive) or quoted glob "
                        "patterns; several may follow one --image. An existing file name is always taken "
                        "literally. They are processed in sorted order. With --video: one image, the "
                        "conditioning image of every video (unset: each video's first frame).")
    parser.add_argument("--video", type=str, nargs="+", default=[],
                        help="Video-to-video: input videos (mp4/mov, webm/mkv, avi, gif; files, directories or "
                        "quoted glob patterns like --image). Each is resampled to --SVD.num_frames frames, sized "
                        "like an image, noised --SVD.strength of the way up the schedule and sampled back.")
    parser.add_argument("--output_dir", type=str, default="outputs",
                        help="Where videos, their JSON sidecars and job_summary.json go.")
    parser.add_argument("--output_format", type=Literal["mp4", "gif", "png"], default="mp4",
                        help="mp4 (H.264, yuv420p), gif, or png (a folder of numbered frames).")
    parser.add_argument("--seed", type=Optional[int], default=None,
                        help="Random seed, 0 to 2**32-1. The image at position i of the sorted input list uses "
                        "seed+i. Unset: a random seed, printed and recorded.")
    parser.add_argument("--overwrite", type=bool, default=False,
                        help="Replace existing outputs. Without it an image whose video and complete sidecar "
                        "exist with the same settings is skipped, so an interrupted job resumes.")
    parser.add_argument("--height", type=Optional[int], default=None,
                        help="Output height in pixels, a multiple of 64 (the image is resized and center-cropped). "
                        "Unset: the image's size, each side brought down to a multiple of 64.")
    parser.add_argument("--width", type=Optional[int], default=None,
                        help="Output width in pixels, a multiple of 64 (the image is resized and center-cropped). "
                        "Unset: derived from --height and the image's aspect ratio, or the image's size.")
    parser.add_argument("--elevations_deg", type=Optional[Union[float, List[float]]], default=None,
                        help="SV3D (sv3d_p configs): camera elevation in degrees, one value or one per frame "
                        "(default 10).")
    parser.add_argument("--azimuths_deg", type=Optional[List[float]], default=None,
                        help="SV3D (sv3d_p configs): camera azimuth in degrees, one per frame (default: evenly "
                        "spaced over 360).")
    parser.add_argument("--keep_background", type=bool, default=False,
                        help="SV3D: use an RGB image as it is (centre square) instead of removing its background.")
    parser.add_argument("--image_frame_ratio", type=Optional[float], default=None,
                        help="SV3D: the object's share of the frame when recentring an RGBA cut-out, in (0, 1].")
    parser.add_argument("--mode", type=Optional[Literal[0, 1]], default=None,
                        help="MindSpore execution mode: 0 graph (compiled), 1 PyNative (eager). Unset: what fits "
                        "the device (PyNative on CPU, where graph mode holds far more memory; graph elsewhere).")
    parser.add_argument("--device_target", type=Optional[Literal["Ascend", "GPU", "CPU"]], default=None,
                        help="Backend. Unset: the best one present (Ascend, then GPU, then CPU).")
    parser.add_argument("--device_id", type=Optional[int], default=None,
                        help="Device to use on Ascend/GPU. Unset: DEVICE_ID from the environment (msrun sets it "
                        "per worker), else 0.")
    parser.add_argument("--progress", type=bool, default=True,
                        help="Show progress bars over sampling steps and decode chunks.")
    parser.add_argument("--dist_timeout", type=float, default=900.0,
                        help="Distributed runs: seconds rank 0 waits for a silent worker before reporting it as "
                        "lost in the job summary.")
    return parser


def _check_flag_files(argv: Sequence[str]) -> None:
    """Files given to --config / --SVD must be YAML text; say which one is not (jsonargparse only
    reports a UnicodeDecodeError)."""
    for i, arg in enumerate(argv):
        for flag in ("--config", "--SVD"):
            if arg == flag and i + 1 < len(argv):
                path = argv[i + 1]
            elif arg.startswith(flag + "="):
                path = arg[len(flag) + 1:]
            else:
                continue
            try:
                with open(path, encoding="utf-8") as f:
                    f.read()
            except UnicodeDecodeError:
                raise SVDError(f"{flag}={path!r} is not a YAML text file (it is not UTF-8)") from None
            except OSError:
                pass  # a missing file is jsonargparse's to report; it may also be inline YAML


def _svd_params(cfg) -> SVDParams:
    svd = cfg.SVD.as_dict() if hasattr(cfg.SVD, "as_dict") else dict(vars(cfg.SVD))
    svd.pop("__path__", None)
    return SVDParams(**svd)


def _parameters(cfg) -> dict:
    d = cfg.as_dict() if hasattr(cfg, "as_dict") else dict(vars(cfg))
    d.pop("config", None)
    if isinstance(d.get("SVD"), dict):
        d["SVD"].pop("__path__", None)
    return d


def _default_pipeline_factory(params: SVDParams):
    from svd_ms.pipeline import SVDInferPipeline
    return SVDInferPipeline(params=params)


def main(argv: Optional[Sequence[str]] = None, pipeline_factory: Optional[Callable] = None) -> int:
    from svd_ms.runtime.cluster import is_scheduler, run_scheduler
    if is_scheduler():
        return run_scheduler()
    return run_entry(lambda: run(list(sys.argv[1:] if argv is None else argv), pipeline_factory))


def run(argv: List[str], pipeline_factory: Optional[Callable]) -> int:
    _check_flag_files(argv)
    cfg = build_parser().parse_args(argv)
    try:
        params = _svd_params(cfg)
    except ParamError as exc:
        raise SVDError(f"--SVD.{exc}" if str(exc).startswith(exc.field) else f"--SVD.{exc.field}: {exc}") from None
    from svd_ms.jobs import BatchJob, JobSettings
    from svd_ms.runtime import Cluster, setup_device

    settings = JobSettings(images=cfg.image or [], videos=cfg.video or [], output_dir=cfg.output_dir,
                           output_format=cfg.output_format, seed=cfg.seed, overwrite=cfg.overwrite,
                           height=cfg.height, width=cfg.width, progress=cfg.progress,
                           dist_timeout=cfg.dist_timeout, parameters=_parameters(cfg),
                           elevations_deg=cfg.elevations_deg, azimuths_deg=cfg.azimuths_deg,
                           keep_background=cfg.keep_background, image_frame_ratio=cfg.image_frame_ratio)
    settings.validate()
    cluster = Cluster()
    target, settings.mode = setup_device(cfg.device_target, cfg.device_id, cfg.mode, cluster)
    settings.mode_chosen = cfg.mode is None
    cluster.init()
    job = BatchJob(settings, params, pipeline_factory or _default_pipeline_factory, cluster, target)
    return job.run()


if __name__ == "__main__":
    sys.exit(main())
