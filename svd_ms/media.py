"""Media I/O: finding input files, reading images and videos safely, writing results.

Reading checks what it opens (regular files only, decompression bombs refused from the header,
video containers recognised by content); what a picture becomes as model input is decided in
svd_ms.preparation. Everything written goes to a temporary name first, is checked, and is renamed
into place.
"""
import contextlib
import glob
import json
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
# Larger files are refused before their pixels are decoded (decompression bombs).
MAX_INPUT_PIXELS = 64_000_000


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


# ---------------------------------------------------------------------------------- reading images

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


def read_video_frames(path: str, num_frames: int):
    """Read `num_frames` evenly spaced frames of an input video (first and last kept) as uint8
    (T, H, W, 3), and their info. VideoError names the file on any failure."""
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
    if count != num_frames:
        info["resampled"] = f"{count} frames -> {num_frames}"
    return picked, info


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
