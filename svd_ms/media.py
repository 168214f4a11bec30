"""Images in, videos out: the one place that reads user images and writes results.

Every path that turns a picture into model input -- the CLI, the Python API, the web page and the
training data -- goes through `to_rgb` (one rule for alpha: composite on white) and
`resize_cover_crop` (one rule for size: scale to cover, then cut the centre); input videos
(video-to-video) are read by `load_video` and sized by the same rule. Everything written goes to a
temporary name first, is checked, and is renamed into place.
"""
import contextlib
import glob
import json
import math
import os
import shutil
import stat
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .errors import ImageError, InputError, VideoError, one_line

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif")
VIDEO_FORMATS = ("mp4", "gif", "png")
# Input videos (--video): the container is recognised from the file's first bytes and ffmpeg is
# told which demuxer to use, so that a playlist or concat script renamed to .mp4 cannot make it
# open other files or URLs.
VIDEO_EXTS = (".mp4", ".mov", ".m4v", ".webm", ".mkv", ".avi", ".gif")
# Longer inputs are refused rather than decoded (trim them first); about two minutes at 30 fps.
MAX_VIDEO_FRAMES = 4000
# The released SVD / SVD-XT models were trained on 1024 x 576 (width x height) frames.
SVD_TRAIN_SIZE = (1024, 576)
# Larger files are refused before their pixels are decoded (decompression bombs).
MAX_INPUT_PIXELS = 64_000_000
# Without --width/--height, an image larger than this is scaled down to it (aspect kept).
MAX_AUTO_PIXELS = 1024 * 1024


# ---------------------------------------------------------------------------------- discovery

def _regular_file_problem(path: str) -> Optional[str]:
    """Why `path` cannot be read as an input file, or None. Only regular files are opened: a FIFO
    or a device would block or stream forever."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "no such file"
    except PermissionError:
        return "permission denied"
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    if stat.S_ISDIR(mode):
        return "is a directory"
    if not stat.S_ISREG(mode):
        return "is not a regular file (a FIFO, socket or device)"
    return None


def resolve_images(specs: Sequence[str], exts: Tuple[str, ...] = IMAGE_EXTS,
                   noun: str = "image") -> Tuple[List[str], List[Tuple[str, str]]]:
    """Expand --image specs (or --video specs, with `exts=VIDEO_EXTS, noun="video"`) into a sorted,
    de-duplicated list of paths, plus (spec, reason) problems.

    A spec that exists is taken literally (a file named `a[1].png` is that file, not a pattern);
    a directory gives its images (not recursive); anything else with `*?[` is a glob pattern.
    Explicit file names stay in the list even when missing, so that the error names them and every
    image keeps its position.
    """
    found: Dict[str, str] = {}
    problems: List[Tuple[str, str]] = []

    def add(p: str) -> None:
        norm = os.path.normpath(p)
        found.setdefault(os.path.realpath(norm), norm)

    for spec in specs:
        if os.path.isdir(spec):
            hits = [os.path.join(spec, n) for n in os.listdir(spec)
                    if n.lower().endswith(exts) and os.path.isfile(os.path.join(spec, n))]
            if not hits:
                problems.append((spec, f"directory {spec!r} holds no {noun} ({', '.join(exts)})"))
            for h in hits:
                add(h)
        elif os.path.lexists(spec) or not any(ch in spec for ch in "*?["):
            add(spec)
        else:
            hits = [h for h in glob.glob(spec, recursive=True)
                    if os.path.isfile(h) and h.lower().endswith(exts)]
            if not hits:
                problems.append((spec, f"no {noun} matches the pattern {spec!r}"))
            for h in hits:
                add(h)
    return sorted(found.values()), problems


# ---------------------------------------------------------------------------------- pixels

def to_rgb(img) -> Tuple[Any, Optional[str]]:
    """A PIL image as 8-bit RGB, and a note of the conversion (None when it was RGB already).
    Transparent pixels become white; 16-bit and float greys are scaled to 8 bits."""
    from PIL import Image

    mode = img.mode
    if mode == "RGB":
        return img, None
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(img, dtype=np.float64)
        top = 65535.0 if a.max(initial=0) > 255 else 255.0
        a = np.clip(a / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(a, "L").convert("RGB"), f"{mode} scaled to 8-bit RGB"
    if (mode == "P" and "transparency" in img.info) or mode == "PA":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB"), f"{mode} composited on white"
    return img.convert("RGB"), f"{mode} converted to RGB"


def cover_size(size: Tuple[int, int], width: int, height: int) -> Tuple[int, int]:
    """The (w, h) an image of `size` is resized to so that it covers width x height."""
    w, h = size
    scale = max(width / w, height / h)
    return max(width, math.ceil(w * scale - 1e-6)), max(height, math.ceil(h * scale - 1e-6))


def resize_cover_crop(img, width: int, height: int):
    """Scale a PIL image so it covers width x height (Lanczos when shrinking, bicubic when
    enlarging), then cut the centre."""
    from PIL import Image

    w, h = img.size
    rw, rh = cover_size((w, h), width, height)
    if (rw, rh) != (w, h):
        shrinking = rw * rh < w * h
        img = img.resize((rw, rh), Image.Resampling.LANCZOS if shrinking else Image.Resampling.BICUBIC)
    left, top = (rw - width) // 2, (rh - height) // 2
    return img.crop((left, top, left + width, top + height))


def resize_cover_crop_frames(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """(T, h, w, 3) uint8 video frames through `resize_cover_crop`, frame by frame."""
    from PIL import Image

    out = np.empty((frames.shape[0], height, width, 3), np.uint8)
    for i, frame in enumerate(frames):
        out[i] = np.asarray(resize_cover_crop(Image.fromarray(frame), width, height))
    return out


def open_image(path: str, max_pixels: int = MAX_INPUT_PIXELS):
    """Open one image file: (RGB PIL image with EXIF orientation applied, info). ImageError names
    the file on any failure; more than `max_pixels` is refused from the header, before decoding."""
    img, info = open_image_as_stored(path, max_pixels)
    img, conversion = to_rgb(img)
    if conversion:
        info["conversion"] = conversion
    return img, info


def open_image_as_stored(path: str, max_pixels: int = MAX_INPUT_PIXELS):
    """Open one image file in its own mode (alpha kept), upright by its EXIF orientation, after
    the checks every input gets: a regular file, a decodable image, not a decompression bomb."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    problem = _regular_file_problem(path)
    if problem:
        raise ImageError(f"{path!r}: {problem}")
    try:
        with Image.open(path) as im:
            if im.size[0] * im.size[1] > max_pixels:
                raise ImageError(f"{path!r}: {im.size[0]}x{im.size[1]} has more than {max_pixels:,} pixels; "
                                 f"refused before decoding")
            im.load()
            orientation = int(im.getexif().get(0x0112, 1) or 1)
            img = ImageOps.exif_transpose(im)  # a transposed copy; a plain copy without EXIF
            original_mode, original_size = im.mode, im.size
    except UnidentifiedImageError:
        raise ImageError(f"{path!r}: not an image, or corrupt (Pillow cannot identify it)") from None
    except Image.DecompressionBombError as exc:
        raise ImageError(f"{path!r}: too large to open safely ({exc})") from None
    except PermissionError:
        raise ImageError(f"{path!r}: permission denied") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(f"{path!r}: cannot be decoded, the file looks corrupt or truncated "
                         f"({one_line(exc)})") from None
    info: Dict[str, Any] = {"path": os.path.abspath(path), "original_size": list(original_size),
                            "original_mode": original_mode, "exif_orientation": orientation}
    return img, info


def prepare_image(img, info: Dict[str, Any], height: Optional[int] = None, width: Optional[int] = None,
                  reference_size: Tuple[int, int] = SVD_TRAIN_SIZE, name: str = "image"):
    """Size an RGB PIL image for the model: to width x height by `resize_cover_crop` (a missing
    side follows the aspect ratio), or else each side brought down to a multiple of 64.
    Returns (uint8 HxWx3, info, warnings)."""
    from PIL import Image

    warnings: List[str] = []
    w, h = img.size
    if w < 64 or h < 64:
        raise ImageError(f"{name}: {w}x{h} is too small, both sides must be at least 64 px")
    if height is not None or width is not None:
        if height is None:
            height = max(64, int(round(h * width / w / 64)) * 64)
        if width is None:
            width = max(64, int(round(w * height / h / 64)) * 64)
        img = resize_cover_crop(img, width, height)
        rw, rh = cover_size((w, h), width, height)
        info["preprocessing"] = f"resized {w}x{h} -> {rw}x{rh}, center-cropped to {width}x{height}"
    elif w * h > MAX_AUTO_PIXELS:
        scale = math.sqrt(MAX_AUTO_PIXELS / (w * h))
        nw, nh = max(64, int(w * scale) // 64 * 64), max(64, int(h * scale) // 64 * 64)
        img = img.resize((nw, nh), Image.Resampling.LANCZOS)
        info["preprocessing"] = f"resized {w}x{h} -> {nw}x{nh}"
        warnings.append(f"{name}: {w}x{h} is larger than {MAX_AUTO_PIXELS:,} pixels; resized to {nw}x{nh} "
                        f"(use --width/--height to choose the size)")
    elif w % 64 or h % 64:
        nw, nh = w - w % 64, h - h % 64
        img = img.resize((nw, nh), Image.Resampling.LANCZOS)
        info["preprocessing"] = f"resized {w}x{h} -> {nw}x{nh}"
        warnings.append(f"{name}: {w}x{h} is not a multiple of 64 on each side; resized to {nw}x{nh} "
                        f"(use --width/--height to resize and crop instead)")
    out_w, out_h = img.size
    info["size"] = [out_w, out_h]
    ref_w, ref_h = reference_size
    far_area = not (0.5 <= (out_w * out_h) / (ref_w * ref_h) <= 2.0)
    far_aspect = abs(math.log((out_w / out_h) / (ref_w / ref_h))) > math.log(1.25)
    if far_area or far_aspect:
        warnings.append(f"{name}: {out_w}x{out_h} is far from {ref_w}x{ref_h}, the size the model was trained "
                        f"at; expect weaker motion and detail (try --width={ref_w} --height={ref_h}, or raise "
                        f"--SVD.noise_aug_strength)")
    info["warnings"] = warnings
    return np.asarray(img, dtype=np.uint8).copy(), info, warnings


def load_image(path: str, height: Optional[int] = None, width: Optional[int] = None,
               reference_size: Tuple[int, int] = SVD_TRAIN_SIZE):
    """Read one image file as uint8 HxWx3, sized for the model: (array, info, warnings)."""
    img, info = open_image(path)
    return prepare_image(img, info, height, width, reference_size, name=repr(path))


def image_to_array(image) -> np.ndarray:
    """Path, PIL image, uint8 HxWx3 array or float array in [-1, 1] -> float32 (1, 3, H, W) in
    [-1, 1]. Paths and PIL images follow the same alpha rule as the CLI (`to_rgb`)."""
    if isinstance(image, (str, os.PathLike)):
        image, _ = open_image(os.fspath(image))
    if hasattr(image, "mode") and hasattr(image, "size"):
        image = np.asarray(to_rgb(image)[0])
    array = np.asarray(image)
    if array.dtype == np.uint8:
        if array.ndim != 3 or array.shape[2] != 3:
            raise InputError(f"uint8 image must be HxWx3, got shape {array.shape}")
        array = array.astype(np.float32).transpose(2, 0, 1)[None] / 127.5 - 1.0
    else:
        array = array.astype(np.float32)
        if array.ndim == 3:
            array = array[None]
        if array.ndim != 4 or array.shape[:2] != (1, 3):
            raise InputError(f"float image must be (1, 3, H, W) or (3, H, W), got shape {array.shape}")
    return np.ascontiguousarray(array, np.float32)


# ---------------------------------------------------------------------------------- input videos

def _demuxer(path: str) -> str:
    """The ffmpeg demuxer for a video file, from its first bytes (never from its name)."""
    with open(path, "rb") as f:
        head = f.read(16)
    if head[4:8] in (b"ftyp", b"moov", b"mdat", b"wide", b"free"):
        return "mov"  # mp4, mov, m4v; external data references stay off (the demuxer's default)
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "matroska"  # mkv, webm
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "avi"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    raise VideoError(f"{path!r}: not a video this tool reads (mp4/mov, webm/mkv, avi or gif), or corrupt")


def _video_frames(path: str, demuxer: str):
    """(meta, iterator over (h, w, 3) uint8 frames) from ffmpeg, local file only."""
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(os.path.abspath(path), input_params=["-f", demuxer, "-protocol_whitelist",
                                                                             "file"],
                                        output_params=["-fps_mode", "passthrough"])
    meta = next(reader)
    w, h = meta["size"]

    def frames():
        for raw in reader:
            yield np.frombuffer(raw, np.uint8).reshape(h, w, 3)
    return meta, reader, frames()


def _ffmpeg_reason(exc: BaseException) -> str:
    """ffmpeg's own last word on a failure, without its banner."""
    text = str(exc)
    if "=== stderr ===" in text:
        lines = [line.strip() for line in text.split("=== stderr ===", 1)[1].splitlines() if line.strip()]
        if lines:
            return " ".join(lines[-1].split())[:200]
    return one_line(exc)


def probe_video(path: str) -> Dict[str, Any]:
    """Cheap checks of an input video before any model runs: a regular file, a known container,
    frames ffmpeg can size and not too many pixels each. Returns ffmpeg's metadata."""
    problem = _regular_file_problem(path)
    if problem:
        raise VideoError(f"{path!r}: {problem}")
    demuxer = _demuxer(path)
    try:
        meta, reader, _ = _video_frames(path, demuxer)
        reader.close()
    except VideoError:
        raise
    except Exception as exc:
        raise VideoError(f"{path!r}: cannot be decoded, the file looks corrupt or truncated "
                         f"({_ffmpeg_reason(exc)})") from None
    w, h = meta["size"]
    if w * h > MAX_INPUT_PIXELS:
        raise VideoError(f"{path!r}: {w}x{h} frames have more than {MAX_INPUT_PIXELS:,} pixels; too large, refused "
                         f"before decoding")
    return dict(meta, demuxer=demuxer)


def load_video(path: str, num_frames: int, height: Optional[int] = None, width: Optional[int] = None,
               reference_size: Tuple[int, int] = SVD_TRAIN_SIZE):
    """Read an input video as `num_frames` uint8 (T, H, W, 3) frames sized for the model:
    (frames, info, warnings). Longer videos are resampled to evenly spaced frames (first and last
    kept); every frame is sized by the image rule (`prepare_image` picks the size from the first
    frame, `resize_cover_crop_frames` applies it). VideoError names the file on any failure."""
    from PIL import Image

    meta = probe_video(path)
    demuxer = meta["demuxer"]
    try:
        # Two passes: count, then keep only the chosen frames, so a long input is never held whole.
        meta, reader, frames = _video_frames(path, demuxer)
        count = 0
        for _ in frames:
            count += 1
            if count > MAX_VIDEO_FRAMES:
                reader.close()
                raise VideoError(f"{path!r}: more than {MAX_VIDEO_FRAMES} frames; too large, trim it first")
        if count < num_frames:
            raise VideoError(f"{path!r}: too short, {count} frame(s) where the clip needs {num_frames} "
                             f"(--SVD.num_frames)")
        wanted = np.rint(np.linspace(0, count - 1, num_frames)).astype(int)
        wanted_set = set(wanted.tolist())
        kept: Dict[int, np.ndarray] = {}
        meta, reader, frames = _video_frames(path, demuxer)
        for index, frame in enumerate(frames):
            if index in wanted_set:
                kept[index] = frame.copy()
    except VideoError:
        raise
    except Exception as exc:
        raise VideoError(f"{path!r}: cannot be decoded, the file looks corrupt or truncated "
                         f"({_ffmpeg_reason(exc)})") from None
    if len(kept) != len(wanted_set):
        raise VideoError(f"{path!r}: changed while it was read ({count} frames, then fewer)")
    picked = np.stack([kept[i] for i in wanted])
    src_h, src_w = picked.shape[1:3]
    info: Dict[str, Any] = {"path": os.path.abspath(path), "original_size": [int(src_w), int(src_h)],
                            "original_frames": count, "frames_used": [int(i) for i in wanted],
                            "source_fps": meta.get("fps")}
    first, info, warnings = prepare_image(Image.fromarray(picked[0]), info, height, width, reference_size,
                                          name=repr(path))
    out_h, out_w = first.shape[:2]
    if (out_h, out_w) != (src_h, src_w):
        picked = resize_cover_crop_frames(picked, out_h, out_w)
        info["preprocessing"] = f"resized and center-cropped {src_w}x{src_h} -> {out_w}x{out_h}"
    if count != num_frames:
        info["resampled"] = f"{count} frames -> {num_frames}"
    return picked, info, warnings


def video_to_array(video) -> np.ndarray:
    """uint8 (T, H, W, 3) frames or float (T, 3, H, W) in [-1, 1] -> float32 (T, 3, H, W) in [-1, 1]."""
    array = np.asarray(video)
    if array.dtype == np.uint8:
        if array.ndim != 4 or array.shape[3] != 3:
            raise InputError(f"uint8 video must be (T, H, W, 3), got shape {array.shape}")
        array = array.astype(np.float32).transpose(0, 3, 1, 2) / 127.5 - 1.0
    elif array.ndim != 4 or array.shape[1] != 3:
        raise InputError(f"float video must be (T, 3, H, W) in [-1, 1], got shape {array.shape}")
    return np.ascontiguousarray(array, np.float32)


def to_uint8(video: np.ndarray) -> np.ndarray:
    """(T, 3, H, W) float in [0, 1] -> (T, H, W, 3) uint8."""
    v = np.clip(np.rint(np.asarray(video, dtype=np.float32) * 255.0), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(v.transpose(0, 2, 3, 1))


# ---------------------------------------------------------------------------------- writing

TMP_MARK = ".tmp"


def temporary_name(final: Path) -> Path:
    """A hidden sibling of `final` that the next run recognises as a leftover (see `is_temporary`)."""
    return final.with_name(f".{final.stem}{TMP_MARK}{os.getpid()}{final.suffix}")


def is_temporary(path: Path) -> bool:
    return path.name.startswith(".") and TMP_MARK in path.name


def remove_path(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            p.unlink()


def _encode(frames: np.ndarray, path: Path, fmt: str, fps: int) -> None:
    from PIL import Image

    if fmt == "mp4":
        import imageio
        writer = imageio.get_writer(str(path), format="FFMPEG", mode="I", fps=fps, codec="libx264",
                                    pixelformat="yuv420p", quality=None,
                                    output_params=["-crf", "16", "-movflags", "+faststart"],
                                    macro_block_size=16, ffmpeg_log_level="error")
        try:
            for frame in frames:
                writer.append_data(frame)
        finally:
            writer.close()
    elif fmt == "gif":
        images = [Image.fromarray(frame) for frame in frames]
        images[0].save(path, format="GIF", save_all=True, append_images=images[1:],
                       duration=_gif_frame_ms(fps), loop=0, optimize=False)
    elif fmt == "png":
        path.mkdir(parents=True, exist_ok=False)
        for i, frame in enumerate(frames):
            Image.fromarray(frame).save(path / f"frame_{i:04d}.png")
    else:
        raise InputError(f"output format {fmt!r} is not one of {VIDEO_FORMATS}")


def _gif_frame_ms(fps: int) -> int:
    return max(1, round(1000 / fps))


def read_video_shape(path: Path, fmt: str, fps: int = 7) -> Tuple[int, int, int]:
    """(frames, height, width) of a written video, read back from the file itself. A GIF stores
    identical consecutive frames once with a longer duration: its frames are counted by time."""
    from PIL import Image

    if fmt == "png":
        files = sorted(path.glob("frame_*.png"))
        if not files:
            return 0, 0, 0
        with Image.open(files[0]) as im:
            w, h = im.size
        return len(files), h, w
    if fmt == "gif":
        with Image.open(path) as im:
            total_ms = 0
            for index in range(int(getattr(im, "n_frames", 1))):
                im.seek(index)
                total_ms += int(im.info.get("duration", _gif_frame_ms(fps)))
            return round(total_ms / _gif_frame_ms(fps)), im.size[1], im.size[0]
    import imageio
    count, shape = 0, (0, 0)
    with imageio.get_reader(str(path), format="FFMPEG") as reader:
        for frame in reader:
            count, shape = count + 1, frame.shape[:2]
    return count, shape[0], shape[1]


def write_video(frames: np.ndarray, final: Path, fmt: str, fps: int, overwrite: bool = False) -> None:
    """Write (T, H, W, 3) uint8 frames under a temporary name, read the file back to check that it
    holds every frame at the right size, then rename it into place. Nothing is left under `final`
    when any of this fails; an existing `final` is replaced only with `overwrite`."""
    tmp = temporary_name(final)
    try:
        try:
            _encode(frames, tmp, fmt, fps)
            written = read_video_shape(tmp, fmt, fps)
        except OSError as exc:
            raise ImageError(f"cannot write {str(final)!r} ({exc.strerror or one_line(exc)})") from None
        except Exception as exc:
            raise ImageError(f"cannot write {str(final)!r} ({one_line(exc)})") from None
        expected = tuple(int(n) for n in frames.shape[:3])
        if written != expected:
            raise ImageError(f"writing {str(final)!r} did not finish: the file holds {written[0]} frames of "
                             f"{written[2]}x{written[1]}, expected {expected[0]} of {expected[2]}x{expected[1]} "
                             f"(disk full or a file-size limit?)")
        if final.exists() or final.is_symlink():
            if not overwrite:
                raise ImageError(f"{str(final)!r} appeared while this image was running; not overwritten")
            if final.is_dir() and fmt != "png":
                raise ImageError(f"{str(final)!r} is a directory; not replaced by a {fmt} file")
        if final.is_dir():
            old = final.with_name(f".{final.name}.old{os.getpid()}")
            os.replace(final, old)
            os.replace(tmp, final)
            remove_path(old)
        else:
            os.replace(tmp, final)
    finally:
        if tmp.exists():
            remove_path(tmp)


def write_json(path: Path, obj: Any) -> None:
    """JSON written atomically; an OSError names the file."""
    tmp = temporary_name(path)
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2, default=str, allow_nan=True)
            f.write("\n")
        os.replace(tmp, path)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot write {str(path)!r} ({exc.strerror or exc})") from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
