#!/usr/bin/env python
"""Turn still images into short videos with Stable Video Diffusion on MindSpore.

    python image_to_video.py --SVD.config=configs/svd.yaml \
        --SVD.checkpoint=checkpoints/svd.ckpt --image=photo.jpg

Run ``python image_to_video.py --help`` for every flag. The same command works
unchanged under ``msrun``: each worker then takes its share of the images (see
README, "Many images on many devices").

Exit codes: 0 every image was produced (or already existed), 1 at least one
image failed, 2 nothing could run (bad flags, unusable output directory,
checkpoint or config problem), 130 interrupted.
"""
from __future__ import annotations

import os

# MindSpore's C++ side logs warnings to stderr by default; keep only errors
# unless the user asked for something else. Must happen before the import.
os.environ.setdefault("GLOG_v", "3")

import contextlib
import glob
import hashlib
import inspect
import argparse
import json
import math
import platform
import secrets
import shlex
import socket
import subprocess
import sys
import threading
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Sequence, Tuple

import numpy as np

EXIT_OK, EXIT_FAILED, EXIT_SETUP, EXIT_INTERRUPTED = 0, 1, 2, 130

# The released SVD / SVD-XT models were trained on 1024 x 576 (width x height) frames.
TRAIN_W, TRAIN_H = 1024, 576
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif")
SEED_MOD = 2**32
SUMMARY_NAME = "job_summary.json"
RANK_FILE = ".job_rank{rank}.json"
HEARTBEAT_S = 10.0
REPO_DIR = Path(__file__).resolve().parent

# Help for the --SVD.* flags. They are generated from SVDInferPipeline.__init__;
# a parameter missing here keeps whatever jsonargparse found for it.
SVD_HELP = {
    "config": "Model config YAML: one of configs/*.yaml, an upstream sgm config, or "
    "configs/demo/tiny_random.yaml for the untrained demo.",
    "checkpoint": "Weights: a MindSpore .ckpt or an upstream .safetensors. Torch .pt/.bin/.ckpt "
    "files must first go through svd_tools/convert.py. Leave unset (or 'random') for random "
    "weights: an UNTRAINED model, only useful to try the pipeline.",
    "num_frames": "Frames to generate, at least 1 (unset: the config's, 14 for SVD, 25 for SVD-XT).",
    "fps": "Frames per second, 1 to 60: conditions the model (upstream fps_id = fps - 1) and "
    "is the playback rate of the written video.",
    "motion_bucket_id": "Amount of motion, 0 to 255; higher means more motion.",
    "noise_aug_strength": "Noise added to the conditioning image (upstream cond_aug); raise it "
    "for images far from 1024x576.",
    "decode_chunk_size": "Frames the VAE decodes at once, at least 1; lower uses less memory "
    "(unset: all frames at once).",
    "num_steps": "Sampling steps (unset: the config's, 25 for the released models).",
    "amp_level": "MindSpore mixed-precision level for the networks (O0 = float32 everywhere).",
    "attention": "Attention implementation; auto picks the best one for the backend.",
    "ff_chunk_size": "Run feed-forward layers in chunks of this many tokens to save memory "
    "(unset: no chunking).",
    "height": "Output height in pixels, a multiple of 64 (the image is resized and center-cropped).",
    "width": "Output width in pixels, a multiple of 64 (the image is resized and center-cropped).",
}


class CLIError(Exception):
    """A problem with the flags or the environment: one line, nothing can run."""


class ImageError(Exception):
    """A problem with one input image: one line, the other images still run."""


def _svd_error_types() -> Tuple[type, ...]:
    try:
        from svd_ms.errors import SVDError
    except Exception:  # pragma: no cover - svd_ms broken or absent
        return ()
    return (SVDError,)


def _one_line(err: BaseException, limit: int = 400) -> str:
    """A message on one line. Framework errors (not ours) are cut before their call stacks."""
    ours = isinstance(err, (CLIError, ImageError) + _svd_error_types())
    text = str(err)
    if not ours:
        for marker in ("\n-----", "- C++ Call Stack", "- Python Call Stack", "\nTraceback"):
            cut = text.find(marker)
            if cut > 0:
                text = text[:cut]
    text = " ".join(text.split())
    if not text:
        return type(err).__name__
    if not ours:
        text = f"{type(err).__name__}: {text}"
        if len(text) > limit:
            text = text[:limit - 3].rstrip() + "..."
    return text


def _debug_enabled() -> bool:
    return os.environ.get("SVD_DEBUG", "") not in ("", "0")


def log(msg: str) -> None:
    print(msg, flush=True)


def warn(msg: str) -> None:
    print(f"warning: {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- flags


def get_pipeline_class():
    try:
        from svd_ms.pipeline import SVDInferPipeline
    except ImportError as e:
        raise CLIError(f"cannot import svd_ms.pipeline ({e}); run from the repository root "
                       "with its requirements installed") from e
    return SVDInferPipeline


def _pipeline_params(pipeline_cls) -> Dict[str, inspect.Parameter]:
    sig = inspect.signature(pipeline_cls.__init__)
    return {k: p for k, p in sig.parameters.items()
            if k != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


def build_parser(pipeline_cls):
    from jsonargparse import ActionConfigFile, ArgumentParser

    parser = ArgumentParser(
        prog="image_to_video.py",
        description="Stable Video Diffusion on MindSpore: one or more images in, one video per "
        "image out. Flags can also come from a YAML file given with --config; flags after "
        "--config override it. Under msrun every worker takes its share of the images.",
        env_prefix="SVD_CLI",
        default_env=False,
        exit_on_error=False,  # main() turns a flag error into one line, not usage + message
    )
    parser.add_argument("--config", action=ActionConfigFile,
                        help="YAML file holding any of these flags (e.g. the output of --print_config).")
    parser.add_class_arguments(pipeline_cls, "SVD", help="Model and sampling settings, passed to "
                               "svd_ms.pipeline.SVDInferPipeline.")
    has_hw = "height" in _pipeline_params(pipeline_cls)
    parser.add_argument("--image", type=str, nargs="+", required=True,
                        help="Input images: files, directories (their images, not recursive) or "
                        "quoted glob patterns; several may follow one --image. They are processed "
                        "in sorted order.")
    parser.add_argument("--output_dir", type=str, default="outputs",
                        help="Where videos, their JSON sidecars and job_summary.json go.")
    parser.add_argument("--output_format", type=Literal["mp4", "gif", "png"], default="mp4",
                        help="mp4 (H.264, yuv420p), gif, or png (a folder of numbered frames).")
    parser.add_argument("--seed", type=Optional[int], default=None,
                        help="Random seed, 0 to 2**32-1. The image at position i of the sorted "
                        "input list uses seed+i. Unset: a random seed, printed and recorded.")
    parser.add_argument("--overwrite", type=bool, default=False,
                        help="Replace existing outputs. Without it an image whose video and sidecar "
                        "exist is skipped, so an interrupted job resumes.")
    if not has_hw:
        parser.add_argument("--height", type=Optional[int], default=None, help=SVD_HELP["height"]
                            + " Unset: the image's size, each side brought down to a multiple of 64.")
        parser.add_argument("--width", type=Optional[int], default=None, help=SVD_HELP["width"]
                            + " Unset: derived from --height and the image's aspect ratio, or "
                            "the image's size.")
    parser.add_argument("--mode", type=Literal[0, 1], default=0,
                        help="MindSpore execution mode: 0 graph (compiled), 1 PyNative (eager).")
    parser.add_argument("--device_target", type=Optional[Literal["Ascend", "GPU", "CPU"]],
                        default=None, help="Backend. Unset: the best one present (Ascend, then "
                        "GPU, then CPU).")
    parser.add_argument("--device_id", type=Optional[int], default=None,
                        help="Device to use on Ascend/GPU. Unset: DEVICE_ID from the environment "
                        "(msrun sets it per worker), else 0.")
    parser.add_argument("--progress", type=bool, default=True,
                        help="Show progress bars over sampling steps and decode chunks.")
    parser.add_argument("--dist_timeout", type=float, default=900.0,
                        help="Distributed runs: seconds rank 0 waits for a silent worker before "
                        "reporting it as lost in the job summary.")
    for action in parser._actions:
        dest = getattr(action, "dest", "")
        if dest.startswith("SVD.") and dest[4:] in SVD_HELP:
            action.help = SVD_HELP[dest[4:]]
        elif dest == "SVD":
            action.help = "YAML file holding only the SVD.* settings."
        elif dest.startswith("SVD.") and not action.help:
            action.help = f"Passed to SVDInferPipeline({dest[4:]}=...)."
    return parser


def _svd_kwargs(cfg, pipeline_cls) -> Dict[str, Any]:
    svd = cfg.SVD.as_dict() if hasattr(cfg.SVD, "as_dict") else dict(vars(cfg.SVD))
    params = _pipeline_params(pipeline_cls)
    kwargs = {k: v for k, v in svd.items() if k in params}
    if isinstance(kwargs.get("checkpoint"), str) and kwargs["checkpoint"].strip().lower() in (
            "", "random", "none", "null"):
        kwargs["checkpoint"] = None  # random weights: the untrained demo
    return kwargs


def validate_args(cfg, kwargs: Dict[str, Any]) -> Tuple[Optional[int], Optional[int]]:
    """Cheap checks before anything heavy; returns the target (height, width)."""

    def check(name, lo, hi=None, optional=True):
        if name not in kwargs:
            return
        v = kwargs[name]
        if v is None and optional:
            return
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v < lo or (hi is not None and v > hi):
            rng = f"between {lo} and {hi}" if hi is not None else f"at least {lo}"
            raise CLIError(f"--SVD.{name}={v} is out of range: it must be {rng}")

    if not kwargs.get("config"):
        raise CLIError("--SVD.config is required: a model config such as configs/svd.yaml "
                       "(or configs/demo/tiny_random.yaml for the untrained demo)")
    cpath = Path(kwargs["config"])
    if not cpath.is_file():
        raise CLIError(f"--SVD.config: {cpath} does not exist")
    check("num_frames", 1)
    check("decode_chunk_size", 1)
    check("num_steps", 1)
    check("fps", 1, 60, optional=False)
    check("motion_bucket_id", 0, 255, optional=False)
    check("noise_aug_strength", 0.0)
    check("ff_chunk_size", 1)
    if not cfg.dist_timeout > 0:
        raise CLIError(f"--dist_timeout={cfg.dist_timeout} must be a positive number of seconds")
    if cfg.seed is not None and not (0 <= cfg.seed < SEED_MOD):
        raise CLIError(f"--seed={cfg.seed} is out of range: it must be between 0 and {SEED_MOD - 1}")
    check_checkpoint(kwargs.get("checkpoint"))

    height = kwargs.get("height", getattr(cfg, "height", None))
    width = kwargs.get("width", getattr(cfg, "width", None))
    flag = "--SVD." if "height" in kwargs else "--"
    for name, v in (("height", height), ("width", width)):
        if v is not None and (v < 64 or v % 64):
            raise CLIError(f"{flag}{name}={v} must be a positive multiple of 64")
    return height, width


def check_checkpoint(ckpt: Optional[str]) -> None:
    """Missing files and torch checkpoints fail here, before the model is built."""
    if ckpt is None or str(ckpt).lower() in ("", "random", "none"):
        return
    p = Path(ckpt)
    if not p.exists():
        raise CLIError(f"--SVD.checkpoint: {p} does not exist")
    if p.is_dir():
        raise CLIError(f"--SVD.checkpoint: {p} is a directory, expected a .ckpt or .safetensors "
                       f"file (a diffusers folder must first go through svd_tools/convert.py)")
    try:
        with open(p, "rb") as f:
            head = f.read(8)
    except OSError as e:
        raise CLIError(f"--SVD.checkpoint: cannot read {p} ({e.strerror or e})") from e
    torch_zip = head[:4] == b"PK\x03\x04"           # torch.save since 1.6
    torch_pickle = head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")
    if torch_zip or torch_pickle or p.suffix.lower() in (".pt", ".pth", ".bin"):
        raise CLIError(f"--SVD.checkpoint: {p} is a PyTorch checkpoint; convert it first with "
                       f"`python svd_tools/convert.py` (see README) and pass the .ckpt it writes")


def check_output_dir(path: str, rank: int = 0) -> Path:
    out = Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CLIError(f"--output_dir: cannot create {out} ({e.strerror or e})") from e
    if not out.is_dir():
        raise CLIError(f"--output_dir: {out} is not a directory")
    probe = out / f".write_test.{os.getpid()}.{rank}"
    try:
        with open(probe, "wb") as f:
            f.write(b"ok")
        os.remove(probe)
    except OSError as e:
        raise CLIError(f"--output_dir: {out} is not writable ({e.strerror or e})") from e
    return out


# --------------------------------------------------------------------------- inputs


def resolve_images(specs: Sequence[str]) -> Tuple[List[str], List[Tuple[str, str]]]:
    """Expand --image into a sorted, de-duplicated list of paths.

    Explicit file names stay in the list even when missing, so that the error
    names them and every image keeps its position. Patterns and directories
    that give nothing are returned as problems.
    """
    found: Dict[str, str] = {}
    problems: List[Tuple[str, str]] = []

    def add(p: str) -> None:
        norm = os.path.normpath(p)
        key = os.path.realpath(norm)
        found.setdefault(key, norm)

    for spec in specs:
        if any(ch in spec for ch in "*?["):
            hits = [h for h in glob.glob(spec, recursive=True)
                    if os.path.isfile(h) and h.lower().endswith(IMAGE_EXTS)]
            if not hits:
                problems.append((spec, f"no image matches the pattern {spec!r}"))
            for h in hits:
                add(h)
        elif os.path.isdir(spec):
            hits = [os.path.join(spec, n) for n in os.listdir(spec)
                    if n.lower().endswith(IMAGE_EXTS) and os.path.isfile(os.path.join(spec, n))]
            if not hits:
                problems.append((spec, f"directory {spec} holds no image ({', '.join(IMAGE_EXTS)})"))
            for h in hits:
                add(h)
        else:
            add(spec)
    return sorted(found.values()), problems


def _to_rgb(img):
    from PIL import Image

    mode = img.mode
    if mode == "RGB":
        return img, None
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(img, dtype=np.float64)
        top = 65535.0 if a.max(initial=0) > 255 else 255.0
        a = np.clip(a / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(a, "L").convert("RGB"), f"{mode} scaled to 8-bit RGB"
    if mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if mode == "PA":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(bg, rgba).convert("RGB"), f"{mode} composited on white"
    return img.convert("RGB"), f"{mode} converted to RGB"


def load_image(path: str, height: Optional[int] = None, width: Optional[int] = None):
    """Read one image as uint8 HxWx3, sized for the model.

    Returns (array, info, warnings). Raises ImageError with a one-line reason.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not os.path.exists(path):
        raise ImageError(f"{path}: no such file")
    if os.path.isdir(path):
        raise ImageError(f"{path}: is a directory")
    try:
        with Image.open(path) as im:
            im.load()
            orientation = int(im.getexif().get(0x0112, 1) or 1)
            img = ImageOps.exif_transpose(im)  # a transposed copy; a plain copy without EXIF
            orig_mode = im.mode
            orig_size = im.size
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not an image, or corrupt (Pillow cannot identify it)") from None
    except Image.DecompressionBombError as e:
        raise ImageError(f"{path}: too large to open safely ({e})") from None
    except PermissionError:
        raise ImageError(f"{path}: permission denied") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise ImageError(f"{path}: cannot be decoded, the file looks corrupt or truncated "
                         f"({_one_line(e)})") from None
    warnings: List[str] = []
    info: Dict[str, Any] = {"path": os.path.abspath(path), "original_size": list(orig_size),
                            "original_mode": orig_mode, "exif_orientation": orientation}
    img, conversion = _to_rgb(img)
    if conversion:
        info["conversion"] = conversion
    w, h = img.size
    if w < 64 or h < 64:
        raise ImageError(f"{path}: {w}x{h} is too small, both sides must be at least 64 px")

    if height is not None or width is not None:
        if height is None:
            height = max(64, int(round(h * width / w / 64)) * 64)
        if width is None:
            width = max(64, int(round(w * height / h / 64)) * 64)
        scale = max(width / w, height / h)
        rw, rh = max(width, math.ceil(w * scale - 1e-6)), max(height, math.ceil(h * scale - 1e-6))
        if (rw, rh) != (w, h):
            resample = Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.BICUBIC
            img = img.resize((rw, rh), resample)
        left, top = (rw - width) // 2, (rh - height) // 2
        img = img.crop((left, top, left + width, top + height))
        info["preprocessing"] = (f"resized {w}x{h} -> {rw}x{rh}, center-cropped to "
                                 f"{width}x{height}")
    elif w % 64 or h % 64:
        nw, nh = w - w % 64, h - h % 64
        img = img.resize((nw, nh), Image.Resampling.LANCZOS)
        info["preprocessing"] = f"resized {w}x{h} -> {nw}x{nh}"
        warnings.append(f"{path}: {w}x{h} is not a multiple of 64 on each side; resized to "
                        f"{nw}x{nh} (use --width/--height to resize and crop instead)")
    out_w, out_h = img.size
    info["size"] = [out_w, out_h]
    far_area = not (0.5 <= (out_w * out_h) / (TRAIN_W * TRAIN_H) <= 2.0)
    far_aspect = abs(math.log((out_w / out_h) / (TRAIN_W / TRAIN_H))) > math.log(1.25)
    if far_area or far_aspect:
        warnings.append(f"{path}: {out_w}x{out_h} is far from {TRAIN_W}x{TRAIN_H}, the size the "
                        f"released SVD models were trained at; expect weaker motion and detail "
                        f"(try --width={TRAIN_W} --height={TRAIN_H}, or raise "
                        f"--SVD.noise_aug_strength)")
    info["warnings"] = warnings
    return np.asarray(img, dtype=np.uint8).copy(), info, warnings


# --------------------------------------------------------------------------- outputs


def output_paths(output_dir: Path, image: str, seed: int, fmt: str) -> Tuple[Path, Path]:
    stem = Path(image).stem
    base = f"{stem}_seed{seed}"
    video = output_dir / (base if fmt == "png" else f"{base}.{fmt}")
    return video, output_dir / f"{base}.json"


def _tmp_name(final: Path) -> Path:
    suffix = final.suffix if final.suffix else ""
    return final.with_name(f".{final.stem}.tmp{os.getpid()}{suffix}")


def to_uint8(video: np.ndarray) -> np.ndarray:
    """(T,3,H,W) float in [0,1] -> (T,H,W,3) uint8."""
    v = np.clip(np.rint(np.asarray(video, dtype=np.float32) * 255.0), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(v.transpose(0, 2, 3, 1))


def write_video(frames: np.ndarray, final: Path, fmt: str, fps: int, overwrite: bool) -> None:
    """Write frames (T,H,W,3 uint8) under a temporary name, then rename into place."""
    import imageio

    tmp = _tmp_name(final)
    try:
        if fmt == "mp4":
            writer = imageio.get_writer(str(tmp), format="FFMPEG", mode="I", fps=fps,
                                        codec="libx264", pixelformat="yuv420p", quality=None,
                                        output_params=["-crf", "16", "-movflags", "+faststart"],
                                        macro_block_size=16, ffmpeg_log_level="error")
            try:
                for fr in frames:
                    writer.append_data(fr)
            finally:
                writer.close()
        elif fmt == "gif":
            from PIL import Image

            ims = [Image.fromarray(fr) for fr in frames]
            ims[0].save(tmp, format="GIF", save_all=True, append_images=ims[1:],
                        duration=max(1, round(1000 / fps)), loop=0, optimize=False)
        else:
            from PIL import Image

            tmp.mkdir(parents=True, exist_ok=False)
            for i, fr in enumerate(frames):
                Image.fromarray(fr).save(tmp / f"frame_{i:04d}.png")
        if final.exists() and not overwrite:
            raise ImageError(f"{final} appeared while this image was running; not overwritten")
        if final.is_dir():
            old = final.with_name(f".{final.name}.old{os.getpid()}")
            os.replace(final, old)
            os.replace(tmp, final)
            _remove(old)
        else:
            os.replace(tmp, final)
    finally:
        if tmp.exists():
            _remove(tmp)


def _remove(p: Path) -> None:
    import shutil

    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            p.unlink()


def write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2, default=str, allow_nan=True)
            f.write("\n")
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


# --------------------------------------------------------------------------- environment


@contextlib.contextmanager
def _quiet_stderr():
    """Silence C-level stderr (library probes print 'cannot load ...' lines)."""
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, ValueError, OSError):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), fd)
            yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)


def detect_device_target() -> str:
    import mindspore as ms

    for target in ("Ascend", "GPU"):
        try:
            with _quiet_stderr():
                if ms.hal.is_available(target):
                    return target
        except Exception:
            continue
    return "CPU"


class PeakMemory:
    """Peak resident memory of this process between reset() and read()."""

    def __init__(self, device_target: str):
        self.device_target = device_target

    def reset(self) -> None:
        with contextlib.suppress(OSError):
            with open("/proc/self/clear_refs", "w") as f:  # Linux: resets VmHWM
                f.write("5")
        if self.device_target != "CPU":
            with contextlib.suppress(Exception):
                import mindspore as ms

                ms.hal.reset_peak_memory_stats()

    def read(self) -> Dict[str, Optional[int]]:
        host = None
        with contextlib.suppress(OSError, ValueError):
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        host = int(line.split()[1]) * 1024
        if host is None:
            with contextlib.suppress(Exception):
                import resource

                host = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        device = None
        if self.device_target != "CPU":
            with contextlib.suppress(Exception):
                import mindspore as ms

                device = int(ms.hal.max_memory_allocated())
        return {"peak_host_bytes": host, "peak_device_bytes": device}


def _gib(n: Optional[int]) -> str:
    return "n/a" if n is None else f"{n / 2**30:.2f} GiB"


def versions() -> Dict[str, Optional[str]]:
    out: Dict[str, Optional[str]] = {"python": platform.python_version(),
                                     "platform": platform.platform()}
    for mod, name in (("mindspore", "mindspore"), ("mindone", "mindone"), ("numpy", "numpy"),
                      ("PIL", "pillow"), ("imageio", "imageio"), ("imageio_ffmpeg", "imageio-ffmpeg"),
                      ("jsonargparse", "jsonargparse"), ("svd_ms", "svd_ms")):
        try:
            m = __import__(mod)
            out[name] = str(getattr(m, "__version__", "unknown"))
        except Exception:
            out[name] = None
    with contextlib.suppress(Exception):
        import imageio_ffmpeg

        out["ffmpeg"] = imageio_ffmpeg.get_ffmpeg_version()
    out["git_commit"] = None
    with contextlib.suppress(Exception):
        res = subprocess.run(["git", "-C", str(REPO_DIR), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5)
        if res.returncode == 0:
            out["git_commit"] = res.stdout.strip()
            dirty = subprocess.run(["git", "-C", str(REPO_DIR), "status", "--porcelain",
                                    "--untracked-files=no"], capture_output=True, text=True,
                                   timeout=5)
            out["git_dirty"] = bool(dirty.stdout.strip()) if dirty.returncode == 0 else None
    return out


# --------------------------------------------------------------------------- msrun


class Cluster:
    """Where this process sits in an msrun job (or a single process when not under msrun)."""

    def __init__(self):
        env = os.environ
        self.distributed = env.get("MS_ROLE") == "MS_WORKER" and "MS_WORKER_NUM" in env
        self.rank = 0
        self.world = 1
        self.local_device = None
        if self.distributed:
            self.rank = int(env.get("RANK_ID", env.get("MS_NODE_ID", "0")))
            self.world = int(env["MS_WORKER_NUM"])
            if "DEVICE_ID" in env:
                self.local_device = int(env["DEVICE_ID"])

    def init(self) -> None:
        if not self.distributed:
            return
        from mindspore.communication import get_group_size, get_rank, init

        try:
            init()
        except Exception as e:
            raise CLIError(f"msrun worker: communication init failed ({_one_line(e)})") from e
        self.rank, self.world = int(get_rank()), int(get_group_size())

    def all_gather_ints(self, values: Sequence[int]) -> np.ndarray:
        """Gather a few non-negative 31-bit ints from every rank: (world, len(values))."""
        row = np.asarray([values], dtype=np.int32)
        if not self.distributed or self.world == 1:
            return row
        import mindspore as ms
        from mindspore import nn, ops

        class _Gather(nn.Cell):
            def __init__(self):
                super().__init__()
                self.op = ops.AllGather()

            @ms.jit
            def construct(self, x):
                return self.op(x)

        return _Gather()(ms.Tensor(row)).asnumpy().reshape(self.world, -1)


def _hash31(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big") & 0x7FFFFFFF


def setup_mindspore(cfg, cluster: Cluster) -> str:
    import mindspore as ms

    target = cfg.device_target or detect_device_target()
    device_id = cfg.device_id
    if cluster.distributed and cluster.local_device is not None:
        if device_id is not None and device_id != cluster.local_device:
            warn(f"--device_id={device_id} ignored under msrun: this worker uses device "
                 f"{cluster.local_device} (DEVICE_ID)")
        device_id = cluster.local_device
    if device_id is None:
        device_id = int(os.environ.get("DEVICE_ID", "0"))
    try:
        from svd_ms import policy
        policy.select_device(target, None if target == "CPU" else device_id)
        ms.set_context(mode=ms.GRAPH_MODE if cfg.mode == 0 else ms.PYNATIVE_MODE)
        policy.apply_runtime_settings()
    except Exception as e:
        culprit = f"--device_target={target}" + (f" --device_id={device_id}" if target != "CPU" else "")
        raise CLIError(f"{culprit}: cannot use it ({_one_line(e)})") from e
    return target


# --------------------------------------------------------------------------- the job


class RankState:
    """This rank's results, mirrored to .job_rank<k>.json with a heartbeat in distributed runs."""

    def __init__(self, out_dir: Path, cluster: Cluster, job_id: int):
        self.path = out_dir / RANK_FILE.format(rank=cluster.rank)
        self.enabled = cluster.distributed
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.data: Dict[str, Any] = {
            "job_id": job_id, "rank": cluster.rank, "world_size": cluster.world,
            "host": socket.gethostname(), "pid": os.getpid(), "finished": False,
            "heartbeat": time.time(), "assigned": 0, "done": [], "skipped": [], "failed": [],
            "timings": {},
        }
        self.thread = None
        if self.enabled:
            self.flush()
            self.thread = threading.Thread(target=self._beat, daemon=True)
            self.thread.start()

    def _beat(self):
        while not self.stop.wait(HEARTBEAT_S):
            self.flush()

    def flush(self):
        if not self.enabled:
            return
        with self.lock:
            self.data["heartbeat"] = time.time()
            with contextlib.suppress(OSError):
                write_json(self.path, self.data)

    def add(self, kind: str, entry: Dict[str, Any]):
        with self.lock:
            self.data[kind].append(entry)
        self.flush()

    def finish(self, keep_beating: bool = False):
        """Publish the final results. Rank 0 keeps its heartbeat while it waits for the others,
        so that they can tell it is alive; the other ranks fall silent."""
        if not keep_beating:
            self.end_heartbeat()
        with self.lock:
            self.data["finished"] = True
        self.flush()

    def end_heartbeat(self):
        self.stop.set()
        if self.thread is not None:
            self.thread.join(timeout=HEARTBEAT_S + 5)
            self.thread = None


def _reproduce_command(cfg, kwargs, image: str, seed: int, out_dir: Path) -> str:
    parts = ["python", "image_to_video.py"]
    for k, v in kwargs.items():
        if v is not None:
            parts.append(f"--SVD.{k}={v}")
    for k in ("height", "width"):
        if getattr(cfg, k, None) is not None:
            parts.append(f"--{k}={getattr(cfg, k)}")
    parts += [f"--mode={cfg.mode}", f"--image={image}", f"--seed={seed}",
              f"--output_format={cfg.output_format}", f"--output_dir={out_dir}"]
    return " ".join(shlex.quote(p) for p in parts)


def _jsonable_cfg(cfg) -> Dict[str, Any]:
    d = cfg.as_dict() if hasattr(cfg, "as_dict") else dict(vars(cfg))
    d.pop("config", None)
    if isinstance(d.get("SVD"), dict):
        d["SVD"].pop("__path__", None)
    return json.loads(json.dumps(d, default=str))


def run_job(cfg, pipeline_cls) -> int:
    t_job = time.perf_counter()
    kwargs = _svd_kwargs(cfg, pipeline_cls)
    cluster = Cluster()
    target = setup_mindspore(cfg, cluster)
    cluster.init()
    tag = f"[rank {cluster.rank}/{cluster.world}] " if cluster.distributed else ""

    # Local checks. In a cluster their verdict is shared first, so that every rank stops together.
    setup_error: Optional[str] = None
    out_dir = Path(cfg.output_dir)
    height = width = None
    try:
        height, width = validate_args(cfg, kwargs)
        out_dir = check_output_dir(cfg.output_dir, cluster.rank)
    except CLIError as e:
        setup_error = str(e)
    images, problems = resolve_images(cfg.image)
    if cluster.rank == 0 and cluster.distributed and setup_error is None:
        for old in out_dir.glob(".job_rank*.json"):  # stale files from an earlier job
            with contextlib.suppress(OSError):
                old.unlink()

    job_id = secrets.randbelow(2**31)
    if cfg.seed is not None and setup_error is None:
        base_seed = cfg.seed
    else:
        base_seed = secrets.randbelow(SEED_MOD)
    shared = cluster.all_gather_ints([0 if setup_error else 1, job_id, base_seed >> 16,
                                      base_seed & 0xFFFF, _hash31("\n".join(images))])
    if setup_error:
        raise CLIError(setup_error)
    if not shared[:, 0].all():
        bad = [int(r) for r in np.nonzero(shared[:, 0] == 0)[0]]
        raise CLIError(f"setup failed on rank(s) {bad}; see their logs")
    if len(set(shared[:, 4].tolist())) != 1:
        raise CLIError("workers see different --image lists (different working directories or "
                       "file systems?); every worker must see the same files")
    job_id = int(shared[0, 1])
    base_seed = (int(shared[0, 2]) << 16) | int(shared[0, 3])
    log(f"{tag}seed: {base_seed}" + (" (random)" if cfg.seed is None else "")
        + f"; {len(images)} image(s); device {target}, mode {cfg.mode} "
        f"({'graph' if cfg.mode == 0 else 'PyNative'})")

    state = RankState(out_dir, cluster, job_id)
    meta = {"versions": versions(), "device_target": target, "mode": cfg.mode,
            "world_size": cluster.world}
    try:
        if cluster.rank == 0:
            for spec, reason in problems:
                print(f"error: --image {reason}", file=sys.stderr, flush=True)
                state.add("failed", {"image": spec, "reason": reason, "rank": 0})
        mine = [(i, p) for i, p in enumerate(images) if i % cluster.world == cluster.rank]
        state.data["assigned"] = len(mine)
        code = _run_shard(cfg, pipeline_cls, kwargs, mine, base_seed, out_dir, height, width,
                          target, cluster, state, meta, tag)
    finally:
        state.data["timings"]["total_s"] = time.perf_counter() - t_job
        state.finish(keep_beating=cluster.rank == 0)

    if cluster.rank != 0:
        # Leave together with rank 0: MindSpore's cluster does not expect workers to exit while
        # others still compute (the scheduler may then declare the busy ones lost).
        _wait_for_summary(out_dir, job_id, cfg.dist_timeout, tag)
        return EXIT_FAILED if state.data["failed"] else code
    if not cluster.distributed:
        return _write_summary(out_dir, [state.data], 1, job_id, base_seed, cfg, images, code)
    try:
        ranks = _gather_rank_files(out_dir, cluster.world, job_id, cfg.dist_timeout)
        return _write_summary(out_dir, ranks, cluster.world, job_id, base_seed, cfg, images, code)
    finally:
        state.end_heartbeat()
        for r in range(cluster.world):
            with contextlib.suppress(OSError):
                (out_dir / RANK_FILE.format(rank=r)).unlink()


def _wait_for_summary(out_dir: Path, job_id: int, timeout: float, tag: str) -> None:
    """Ranks other than 0: wait until rank 0 has written this job's summary, or has been silent
    (no heartbeat in its results file) for `timeout` seconds."""
    summary, beat = out_dir / SUMMARY_NAME, out_dir / RANK_FILE.format(rank=0)
    last_sig, last_change = None, time.monotonic()
    while True:
        with contextlib.suppress(OSError, ValueError):
            with open(summary, encoding="utf-8") as f:
                if json.load(f).get("job_id") == job_id:
                    return
        try:
            st = beat.stat()
            sig = (st.st_mtime_ns, st.st_size)
        except OSError:
            sig = None
        if sig != last_sig:
            last_sig, last_change = sig, time.monotonic()
        elif time.monotonic() - last_change > timeout:
            warn(f"{tag}rank 0 silent for {timeout:.0f} s; leaving without its job summary")
            return
        time.sleep(0.5)


def _run_shard(cfg, pipeline_cls, kwargs, mine, base_seed, out_dir, height, width, target,
               cluster, state, meta, tag) -> int:
    pending = []
    for index, path in mine:
        seed = (base_seed + index) % SEED_MOD
        video, sidecar = output_paths(out_dir, path, seed, cfg.output_format)
        entry = {"image": path, "index": index, "seed": seed, "output": str(video),
                 "sidecar": str(sidecar), "rank": cluster.rank}
        if not cfg.overwrite and video.exists():
            if sidecar.exists():
                log(f"{tag}skip {path}: {video} already exists (use --overwrite to redo it)")
                state.add("skipped", entry)
            else:
                entry["reason"] = (f"{video} exists without its sidecar {sidecar.name}; pass "
                                   f"--overwrite to replace it")
                print(f"error: {path}: {entry['reason']}", file=sys.stderr, flush=True)
                state.add("failed", entry)
            continue
        try:
            _, _, warnings = load_image(path, height, width)
        except ImageError as e:
            entry["reason"] = str(e)
            print(f"error: {e}", file=sys.stderr, flush=True)
            state.add("failed", entry)
            continue
        for w in warnings:
            warn(w)
        # Only the entry is kept: every image is checked before the model is built, and decoded
        # again when its turn comes, so a folder of thousands is never held in memory at once.
        pending.append(entry)

    if not pending:
        return EXIT_OK
    untrained = kwargs.get("checkpoint") is None
    if untrained:
        warn("UNTRAINED MODEL: --SVD.checkpoint is not set, so the weights are random. The videos "
             "only show the pipeline working from image to file; they are not real results.")
    t0 = time.perf_counter()
    try:
        pipe = pipeline_cls(**kwargs)
    except KeyboardInterrupt:
        raise
    except Exception as e:  # reported per image, so that a cluster job still gets its summary
        reason = _one_line(e)
        print(f"error: {reason}", file=sys.stderr, flush=True)
        if _debug_enabled():
            traceback.print_exc()
        for entry in pending:
            state.add("failed", dict(entry, reason=reason))
        return EXIT_SETUP
    model_load_s = time.perf_counter() - t0
    state.data["timings"]["model_load_s"] = model_load_s
    log(f"{tag}model ready in {model_load_s:.1f} s" + (" -- UNTRAINED random weights: the videos "
                                                        "show the pipeline, not real motion" if untrained else ""))
    mem = PeakMemory(target)
    fps = kwargs.get("fps", 7)
    for n, entry in enumerate(pending, 1):
        path, seed = entry["image"], entry["seed"]
        log(f"{tag}[{n}/{len(pending)}] {path} -> {entry['output']} (seed {seed})")
        mem.reset()
        t_img = time.perf_counter()
        try:
            array, info, _ = load_image(path, height, width)
            t_load = time.perf_counter() - t_img
            video = pipe(array, seed=seed, progress=cfg.progress)
            video = np.asarray(video.asnumpy() if hasattr(video, "asnumpy") else video)
            if video.ndim != 4 or video.shape[1] != 3:
                raise ImageError(f"{path}: the pipeline returned shape {video.shape}, expected (T,3,H,W)")
            if not np.isfinite(video).all():
                raise ImageError(f"{path}: NaN or inf in the decoded frames (stage: decode output, "
                                 f"seed {seed}); nothing written")
            frames = to_uint8(video)
            t_write = time.perf_counter()
            video_path, sidecar_path = Path(entry["output"]), Path(entry["sidecar"])
            write_video(frames, video_path, cfg.output_format, fps, cfg.overwrite)
            t_write = time.perf_counter() - t_write
        except KeyboardInterrupt:
            raise
        except Exception as e:  # one image's failure must not stop the others
            reason = _one_line(e)
            if isinstance(e, _svd_error_types()) and path not in reason:
                reason = f"{path}: {reason}"
            entry["reason"] = reason
            print(f"error: {reason}", file=sys.stderr, flush=True)
            if _debug_enabled():
                traceback.print_exc()
            state.add("failed", entry)
            continue
        pt = dict(getattr(pipe, "last_timings", None) or {})
        steps = [float(s) for s in pt.get("step_s", [])]
        timings = {"load_image_s": t_load, "compile_s": pt.get("compile_s"), "step_s": steps,
                   "mean_step_s": float(np.mean(steps)) if steps else None,
                   "decode_s": pt.get("decode_s"), "pipeline_total_s": pt.get("total_s"),
                   "write_s": t_write, "total_s": time.perf_counter() - t_img,
                   "model_load_s": model_load_s}
        memory = mem.read()
        T, H, W = frames.shape[:3]
        sidecar = {
            "video": video_path.name, "format": cfg.output_format, "frames": T, "width": W,
            "height": H, "fps": fps, "seed": seed, "base_seed": (seed - entry["index"]) % SEED_MOD,
            "index_in_job": entry["index"], "input": info, "untrained": untrained,
            "pipeline": json.loads(json.dumps(kwargs, default=str)),
            "parameters": _jsonable_cfg(cfg),
            "reproduce": _reproduce_command(cfg, kwargs, path, seed, Path(cfg.output_dir)),
            "timings": timings, "memory": memory, **meta,
            "rank": cluster.rank, "host": socket.gethostname(),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        try:
            write_json(sidecar_path, sidecar)
        except OSError as e:  # a video without its sidecar would block a rerun: take it back
            _remove(video_path)
            entry["reason"] = f"{path}: cannot write {sidecar_path} ({e.strerror or e}); video removed"
            print(f"error: {entry['reason']}", file=sys.stderr, flush=True)
            state.add("failed", entry)
            continue
        entry["timings"] = {k: v for k, v in timings.items() if k != "step_s"}
        entry["memory"] = memory
        state.add("done", entry)
        ms_step = f"{timings['mean_step_s']:.2f} s/step" if steps else "s/step n/a"
        comp = pt.get("compile_s")
        dec = pt.get("decode_s")
        log(f"{tag}done {video_path.name}: {len(steps)} steps, {ms_step}, "
            f"decode {dec if dec is None else f'{dec:.2f}'} s, "
            f"compile {comp if comp is None else f'{comp:.2f}'} s, total {timings['total_s']:.1f} s, "
            f"peak host mem {_gib(memory['peak_host_bytes'])}"
            + (f", peak device mem {_gib(memory['peak_device_bytes'])}"
               if memory["peak_device_bytes"] is not None else "")
            + (" [UNTRAINED]" if untrained else ""))
    return EXIT_OK


def _gather_rank_files(out_dir: Path, world: int, job_id: int, timeout: float) -> List[Dict]:
    """Rank 0: wait until every rank has written its finished results file."""
    results: Dict[int, Dict] = {}
    last_change: Dict[int, float] = {r: time.monotonic() for r in range(world)}
    last_sig: Dict[int, Any] = {}
    waiting_note = time.monotonic()
    while len(results) < world:
        for r in range(world):
            if r in results:
                continue
            p = out_dir / RANK_FILE.format(rank=r)
            try:
                st = p.stat()
                sig = (st.st_mtime_ns, st.st_size)
            except OSError:
                sig = None
            if sig is not None and sig != last_sig.get(r):
                last_sig[r] = sig
                try:
                    with open(p, encoding="utf-8") as f:
                        data = json.load(f)
                except (OSError, ValueError):
                    continue
                if data.get("job_id") != job_id:
                    continue
                last_change[r] = time.monotonic()
                if data.get("finished"):
                    results[r] = data
            elif time.monotonic() - last_change[r] > timeout:
                results[r] = {"rank": r, "lost": True, "done": [], "skipped": [],
                              "failed": [{"image": f"<images of rank {r}>", "rank": r,
                                          "reason": f"rank {r} sent no results for {timeout:.0f} s "
                                          f"(crashed, or {out_dir} is not shared between servers)"}]}
        if len(results) < world:
            if time.monotonic() - waiting_note > 60:
                log(f"[rank 0] waiting for rank(s) "
                    f"{[r for r in range(world) if r not in results]} to finish")
                waiting_note = time.monotonic()
            time.sleep(0.5)
    return [results[r] for r in range(world)]


def _write_summary(out_dir: Path, ranks: List[Dict], world: int, job_id: int, base_seed: int,
                   cfg, images: List[str], code: int) -> int:
    done = sorted((e for r in ranks for e in r.get("done", [])), key=lambda e: e["index"])
    skipped = sorted((e for r in ranks for e in r.get("skipped", [])), key=lambda e: e["index"])
    failed = [e for r in ranks for e in r.get("failed", [])]
    failed.sort(key=lambda e: (e.get("index", -1), e["image"]))
    summary = {
        "job_id": job_id, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "world_size": world, "base_seed": base_seed, "output_dir": str(out_dir),
        "output_format": cfg.output_format, "num_images": len(images),
        "counts": {"done": len(done), "skipped": len(skipped), "failed": len(failed)},
        "ok": not failed,
        "done": done, "skipped": skipped,
        "failed": [{"image": e["image"], "reason": e.get("reason", "?"), "rank": e.get("rank"),
                    "seed": e.get("seed")} for e in failed],
        "ranks": [{"rank": r.get("rank"), "host": r.get("host"), "pid": r.get("pid"),
                   "lost": r.get("lost", False), "assigned": r.get("assigned"),
                   "done": len(r.get("done", [])), "skipped": len(r.get("skipped", [])),
                   "failed": len(r.get("failed", [])), "timings": r.get("timings", {}),
                   "mean_step_s": _mean([e.get("timings", {}).get("mean_step_s")
                                         for e in r.get("done", [])])} for r in ranks],
    }
    write_json(out_dir / SUMMARY_NAME, summary)
    log(f"job: {len(done)} done, {len(skipped)} skipped, {len(failed)} failed "
        f"({out_dir / SUMMARY_NAME})")
    for e in summary["failed"]:
        reason = e["reason"] if e["reason"].startswith(e["image"]) else f"{e['image']}: {e['reason']}"
        print(f"FAILED {reason}", file=sys.stderr, flush=True)
    if failed:
        return EXIT_SETUP if code == EXIT_SETUP and not done and not skipped else EXIT_FAILED
    return code


def _mean(xs) -> Optional[float]:
    xs = [x for x in xs if x is not None]
    return float(np.mean(xs)) if xs else None


def run_scheduler() -> int:
    """msrun also starts this script as its scheduler process (MS_ROLE=MS_SCHED): it only has to
    serve the workers' rendezvous. init() returns (or exits) once the workers are gone."""
    try:
        from mindspore.communication import init

        init()
    except Exception as e:
        print(f"error: msrun scheduler: {_one_line(e)}", file=sys.stderr, flush=True)
        return EXIT_SETUP
    return EXIT_OK


def main(argv: Optional[Sequence[str]] = None, pipeline_cls=None) -> int:
    if os.environ.get("MS_ROLE") == "MS_SCHED":
        return run_scheduler()
    try:
        if pipeline_cls is None:
            pipeline_cls = get_pipeline_class()
        parser = build_parser(pipeline_cls)
        cfg = parser.parse_args(list(argv) if argv is not None else None)
        return run_job(cfg, pipeline_cls)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    except argparse.ArgumentError as e:
        print(f"error: {' '.join(str(e).split())} (see --help)", file=sys.stderr, flush=True)
        return EXIT_SETUP
    except (CLIError,) + _svd_error_types() as e:
        print(f"error: {_one_line(e)}", file=sys.stderr, flush=True)
        if _debug_enabled():
            traceback.print_exc()
        return EXIT_SETUP
    except Exception as e:
        if _debug_enabled():
            raise
        print(f"error: unexpected {_one_line(e)} (set SVD_DEBUG=1 for the traceback)",
              file=sys.stderr, flush=True)
        return EXIT_SETUP


if __name__ == "__main__":
    sys.exit(main())
