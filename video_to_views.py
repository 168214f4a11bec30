#!/usr/bin/env python
"""SV4D 2.0 on MindSpore: a video of an object in, the same video seen from new views out.

    python video_to_views.py --SVD.config=configs/sv4d2.yaml \
        --SVD.checkpoint=checkpoints/sv4d2.safetensors --video=object.mp4

Writes one video per new view (<name>_v001.mp4 ...), one grid video (the input and every view side
by side, <name>_grid.mp4) and a JSON sidecar (<name>.json) with every setting.

Exit codes: 0 done, 2 nothing could run (bad flags or input, unusable config or checkpoint),
130 interrupted (Ctrl-C or SIGTERM).
"""
import os

os.environ.setdefault("GLOG_v", "3")  # MindSpore's C++ warnings off unless asked for; before the import

import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import List, Literal, Optional, Sequence, Union  # noqa: E402

from svd_ms import sv4d2  # noqa: E402
from svd_ms.errors import InputError  # noqa: E402
from svd_ms.jobs.console import run_entry  # noqa: E402

VIDEO_FPS = 10  # upstream's save_video


def build_parser():
    from jsonargparse import ActionConfigFile, ArgumentParser

    parser = ArgumentParser(prog="video_to_views.py", exit_on_error=False, default_env=False,
                            description="SV4D 2.0: a video of an object in, one video per new camera view out.")
    parser.add_argument("--config", action=ActionConfigFile, help="YAML file holding any of these flags.")
    parser.add_argument("--SVD.config", type=str, default="configs/sv4d2.yaml",
                        help="Model config: configs/sv4d2.yaml (4 views, 12 frames a chunk) or "
                        "configs/sv4d2_8views.yaml (8 views, 5 frames a chunk), or a config of the same layout.")
    parser.add_argument("--SVD.checkpoint", type=Optional[str], default=None,
                        help="Weights: upstream's sv4d2*.safetensors or a converted .ckpt. Unset: random weights "
                        "(an untrained model, for trying the command).")
    parser.add_argument("--SVD.amp_level", type=Literal["auto", "O0", "O2"], default="auto",
                        help="O0 float32; O2 float16 with float32 islands; auto the device's level (O2 on Ascend, "
                             "O0 elsewhere).")
    parser.add_argument("--SVD.num_steps", type=int, default=sv4d2.NUM_STEPS, help="Sampling steps per chunk.")
    parser.add_argument("--SVD.cfg", type=Optional[float], default=None,
                        help="Largest guidance scale. Unset: upstream's script (2.0 for 4 views, 2.5 for 8).")
    parser.add_argument("--SVD.encoding_t", type=int, default=sv4d2.ENCODING_T,
                        help="Conditioning frames VAE-encoded at a time.")
    parser.add_argument("--SVD.decoding_t", type=int, default=sv4d2.DECODING_T, help="Frames decoded at a time.")
    parser.add_argument("--video", type=str, required=True,
                        help="The input: a video file (mp4/mov, webm/mkv, avi, gif) or a folder of .jpg/.jpeg/.png "
                        "frames (sorted by name). Any number of frames.")
    parser.add_argument("--max_frames", type=Optional[int], default=None, help="Use the first N frames only.")
    parser.add_argument("--output_dir", type=str, default="outputs", help="Where the videos and the sidecar go.")
    parser.add_argument("--seed", type=Optional[int], default=None,
                        help="Random seed, 0 to 2**32-1. Unset: a random seed, printed and recorded.")
    parser.add_argument("--size", type=int, default=sv4d2.IMAGE_SIZE, help="Frame size (square), a multiple of 64.")
    parser.add_argument("--elevations_deg", type=Optional[Union[float, List[float]]], default=None,
                        help="Camera elevation in degrees: one value, or one per view with the input view first "
                        "(default 0).")
    parser.add_argument("--azimuths_deg", type=Optional[List[float]], default=None,
                        help="Camera azimuth in degrees, one per view with the input view first (default: "
                        "upstream's, 0 60 120 180 240 for 4 views).")
    parser.add_argument("--keep_background", type=bool, default=False,
                        help="Use the frames as they are, centre-cropped to a square, instead of framing the object "
                        "(found by the frames' alpha, or as the non-white pixels of an object on white).")
    parser.add_argument("--image_frame_ratio", type=float, default=sv4d2.IMAGE_FRAME_RATIO,
                        help="The object's share of the frame when it is framed, in (0, 1].")
    parser.add_argument("--overwrite", type=bool, default=False, help="Replace existing outputs.")
    parser.add_argument("--mode", type=Optional[Literal[0, 1]], default=None,
                        help="MindSpore execution mode: 0 graph, 1 PyNative. Unset: the device's default.")
    parser.add_argument("--device_target", type=Optional[Literal["Ascend", "GPU", "CPU"]], default=None,
                        help="Device. Unset: the best one present.")
    return parser


def output_paths(output_dir: Path, name: str, num_views: int) -> dict:
    views = [output_dir / f"{name}_v{v:03d}.mp4" for v in range(1, num_views + 1)]
    return {"views": views, "grid": output_dir / f"{name}_grid.mp4", "sidecar": output_dir / f"{name}.json"}


def write_sidecar(path: Path, result, cfg, paths: dict, seconds: float) -> None:
    """The one place the run's record is written: every setting as its value, the outputs, the
    camera and the chunk schedule (the record module of the project takes this over)."""
    from svd_ms import media
    from svd_ms.runtime.versions import versions
    record = {
        "kind": "sv4d2", "input": os.path.abspath(cfg.video), "frames": int(result.input_frames.shape[0]),
        "seed": result.seed, "config": cfg.SVD.config, "checkpoint": cfg.SVD.checkpoint,
        "settings": result.settings,
        "camera": {k: [float(a) for a in result.angles[k]] for k in ("elevations_deg", "azimuths_deg")},
        "outputs": {"views": [p.name for p in paths["views"]], "grid": paths["grid"].name},
        "fps": VIDEO_FPS, "seconds": round(seconds, 3), "versions": versions(),
    }
    media.write_json(path, record)


def run(cfg) -> int:
    from svd_ms import media
    from svd_ms.pipelines.sv4d2 import SV4D2Pipeline
    from svd_ms.runtime import setup_device
    from svd_ms.seeds import resolve_seed
    from svd_ms.util import load_config

    # Everything the user handed in is checked before the model is built.
    source = cfg.video
    if not os.path.exists(source):
        raise InputError(f"--video={source!r} does not exist")
    frames = sv4d2.read_frames(source, cfg.max_frames)
    _, num_views = sv4d2.chunk_layout(load_config(cfg.SVD.config, "--SVD.config", require_model=True))
    sv4d2.view_angles(num_views, sv4d2.script_entry(num_views), cfg.elevations_deg, cfg.azimuths_deg)
    seed = resolve_seed(cfg.seed, "--seed")
    name = Path(source.rstrip("/\\")).stem or "video"
    output_dir = Path(cfg.output_dir)
    paths = output_paths(output_dir, name, num_views)
    existing = [p for p in paths["views"] + [paths["grid"], paths["sidecar"]] if p.exists()]
    if existing and not cfg.overwrite:
        raise InputError(f"{str(existing[0])!r} exists; pass --overwrite to replace it")
    output_dir.mkdir(parents=True, exist_ok=True)
    setup_device(cfg.device_target, None, cfg.mode)
    pipe = SV4D2Pipeline(cfg.SVD.config, cfg.SVD.checkpoint, amp_level=cfg.SVD.amp_level)
    print(f"{source}: {pipe.num_views} views, seed {seed}", file=sys.stderr, flush=True)
    start = time.perf_counter()
    result = pipe(frames, num_steps=cfg.SVD.num_steps, seed=seed, elevations_deg=cfg.elevations_deg,
                  azimuths_deg=cfg.azimuths_deg, size=cfg.size, image_frame_ratio=cfg.image_frame_ratio,
                  keep_background=cfg.keep_background, max_frames=cfg.max_frames, encoding_t=cfg.SVD.encoding_t,
                  decoding_t=cfg.SVD.decoding_t, cfg=cfg.SVD.cfg)
    for frames, path in zip(result.views, paths["views"]):
        media.write_video(frames, path, "mp4", VIDEO_FPS, overwrite=cfg.overwrite)
    media.write_video(result.grid(), paths["grid"], "mp4", VIDEO_FPS, overwrite=cfg.overwrite)
    write_sidecar(paths["sidecar"], result, cfg, paths, time.perf_counter() - start)
    print(f"wrote {len(paths['views'])} views, {paths['grid']} and {paths['sidecar']}", file=sys.stderr, flush=True)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_entry(lambda: run(build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))))


if __name__ == "__main__":
    sys.exit(main())
