"""A batch job: these images, these seeds, this rank's share, resume, sidecars, one summary.

Every image at position i of the sorted input list gets seed `base_seed + i` and the outputs
`<stem>_seed<seed>.<ext>` and `<stem>_seed<seed>.json` (the sidecar). Under msrun, rank r takes
the images at positions i with i % world_size == r; rank 0 gathers every rank's results into
`job_summary.json`.

Completion is decided by the sidecar alone: it is written last, atomically, with
`"status": "done"`, the video's file name and its SHA-256, and the settings that made it. An
image is skipped on a rerun only when that record is complete, the video matches its checksum
and the settings are the same; with other settings it is refused (never silently overwritten).
A record left incomplete by a killed run (`"status": "writing"`, or a video that does not match)
is redone. A video with no sidecar at all is not ours and is refused unless `overwrite`.

Inputs are images (image-to-video) or videos (`videos`: video-to-video, with at most one image as
the conditioning image of every video). A chained video (num_clips > 1) keeps each finished clip
in a hidden folder next to its output (`ClipStore`) until the video and its sidecar are complete,
so that an interrupted run resumes at the first unfinished clip.
"""
import contextlib
import hashlib
import json
import os
import re
import secrets
import shlex
import socket
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import sv3d
from .errors import ImageError, InputError, SVDError, UsageError, one_line
from .media import (VIDEO_EXTS, VIDEO_FORMATS, is_temporary, probe_video, remove_path, resolve_images,
                    temporary_name, to_uint8, write_json, write_video)
from .preparation import load_image, load_video, prepare_input
from .params import SVDParams
from .util import load_config
from .runtime import Cluster, PeakMemory, format_bytes, versions

EXIT_OK, EXIT_FAILED, EXIT_SETUP, EXIT_INTERRUPTED = 0, 1, 2, 130
SEED_MOD = 2**32
SUMMARY_NAME = "job_summary.json"
RANK_FILE = ".job_rank{rank}.json"
HEARTBEAT_S = 10.0


def log(msg: str) -> None:
    print(msg, flush=True)


def warn(msg: str) -> None:
    print(f"warning: {msg}", file=sys.stderr, flush=True)


def report_error(msg: str) -> None:
    print(f"error: {msg}", file=sys.stderr, flush=True)


def debug_enabled() -> bool:
    return os.environ.get("SVD_DEBUG", "") not in ("", "0")


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
        if self.seed is not None and not 0 <= self.seed < SEED_MOD:
            raise UsageError(f"--seed={self.seed} is out of range: it must be between 0 and {SEED_MOD - 1}")
        for name in ("height", "width"):
            value = getattr(self, name)
            if value is not None and (value < 64 or value % 64):
                raise UsageError(f"--{name}={value} must be a positive multiple of 64")


def output_paths(output_dir: Path, image: str, seed: int, fmt: str) -> Tuple[Path, Path]:
    base = f"{Path(image).stem}_seed{seed}"
    return output_dir / (base if fmt == "png" else f"{base}.{fmt}"), output_dir / f"{base}.json"


def check_output_dir(path: str, rank: int = 0) -> Path:
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


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def clean_temporaries(out_dir: Path) -> List[str]:
    """Remove temporary files of killed runs (their process is gone). Returns their names."""
    removed = []
    for p in out_dir.iterdir():
        if not is_temporary(p):
            continue
        match = re.search(r"\.tmp(\d+)", p.name)
        pid = int(match.group(1)) if match else 0
        if pid != os.getpid() and not _pid_alive(pid):
            remove_path(p)
            removed.append(p.name)
    return removed


def file_digest(path: Path) -> str:
    """SHA-256 of a video file, or of a folder of frames (names and contents, in order)."""
    digest = hashlib.sha256()
    files = sorted(path.iterdir()) if path.is_dir() else [path]
    for f in files:
        if path.is_dir():
            digest.update(f.name.encode())
        with open(f, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _hash31(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big") & 0x7FFFFFFF


def _mean(xs) -> Optional[float]:
    xs = [x for x in xs if x is not None]
    return float(np.mean(xs)) if xs else None


class ClipStore:
    """The finished clips of one chained video, in a hidden folder next to its output: one .npz per
    clip (frames before clamping, latents, conditioning image, seed) and key.json, what they were
    made with. Clips made with anything else (settings, seed, input file) are discarded, never
    reused. Each file is written under a temporary name and renamed into place."""

    def __init__(self, video_path: Path, key: Dict[str, Any]):
        self.folder = video_path.with_name(f".{video_path.name}.clips")
        self.key = json.loads(json.dumps(key, default=str))

    def _clip_path(self, index: int) -> Path:
        return self.folder / f"clip{index:04d}.npz"

    def load(self) -> List[Any]:
        """The clips 0..m-1 finished by an earlier run (stops at the first missing or unreadable one)."""
        from .pipeline import ClipResult  # the job itself runs without the model code

        if not self.folder.is_dir():
            return []
        stored = None
        with contextlib.suppress(OSError, ValueError):
            with open(self.folder / "key.json", encoding="utf-8") as f:
                stored = json.load(f)
        if stored != self.key:
            log(f"discarding the finished clips in {str(self.folder)!r}: made with other settings or input")
            self.remove()
            return []
        clips = []
        while self._clip_path(len(clips)).exists():
            try:
                with np.load(self._clip_path(len(clips)), allow_pickle=False) as z:
                    clip = ClipResult(index=int(z["index"]), seed=int(z["seed"]), condition=z["condition"],
                                      frames=z["frames"], latents=z["latents"])
            except Exception:  # a file cut short: that clip is made again
                break
            if clip.index != len(clips):
                break
            clips.append(clip)
        for p in self.folder.iterdir():  # later or partial files do not belong to this chain any more
            if p.name != "key.json" and p not in {self._clip_path(c.index) for c in clips}:
                remove_path(p)
        return clips

    def save(self, clip) -> None:
        self.folder.mkdir(exist_ok=True)
        if not (self.folder / "key.json").exists():
            write_json(self.folder / "key.json", self.key)
        final = self._clip_path(clip.index)
        tmp = temporary_name(final)
        try:
            np.savez(tmp, index=clip.index, seed=clip.seed, condition=clip.condition, frames=clip.frames,
                     latents=clip.latents)
            os.replace(tmp, final)
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()

    def remove(self) -> None:
        remove_path(self.folder)


class RankState:
    """This rank's results, mirrored to .job_rank<k>.json with a heartbeat in distributed runs."""

    def __init__(self, out_dir: Path, cluster: Cluster, job_id: int):
        self.path = out_dir / RANK_FILE.format(rank=cluster.rank)
        self.enabled = cluster.distributed
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.data: Dict[str, Any] = {
            "job_id": job_id, "rank": cluster.rank, "world_size": cluster.world_size,
            "host": socket.gethostname(), "pid": os.getpid(), "finished": False,
            "heartbeat": time.time(), "assigned": 0, "done": [], "skipped": [], "failed": [], "timings": {},
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

    def fail(self, entry: Dict[str, Any], reason: str):
        entry["reason"] = reason
        report_error(reason)
        self.add("failed", entry)

    def finish(self, keep_beating: bool = False):
        """Publish the final results. Rank 0 keeps its heartbeat while it waits for the others, so
        that they can tell it is alive; the other ranks fall silent."""
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


class BatchJob:
    """Runs `settings.images` through pipelines made by `pipeline_factory(params)` on this rank.

    The pipeline needs `generate(image_array, seed=..., progress=...) -> result` with `.video`
    (T, 3, H, W) in [0, 1] and `.timings`, and `.untrained`; for video inputs also `.num_frames`
    and a `video=` argument, for chains `finished_clips=` and `clip_callback=`."""

    def __init__(self, settings: JobSettings, params: SVDParams, pipeline_factory: Callable[[SVDParams], Any],
                 cluster: Optional[Cluster] = None, device_target: str = "CPU"):
        self.settings = settings
        self.params = params
        self.pipeline_factory = pipeline_factory
        self.cluster = cluster or Cluster()
        self.device_target = device_target
        self.tag = self.cluster.tag
        model_config = load_config(params.config, require_model=True).model
        self.input_keys = sv3d.conditioner_input_keys(model_config)
        self.orbit = sv3d.is_orbit_model(self.input_keys)
        guider = ((model_config.params.get("sampler_config") or {}).get("params") or {}).get("guider_config") or {}
        self.num_frames = params.num_frames or (guider.get("params") or {}).get("num_frames") or \
            (sv3d.NUM_FRAMES if self.orbit else None)

    def check_model_inputs(self) -> None:
        """Flags that do not fit the model, refused (or warned about) before any image runs."""
        s, p = self.settings, self.params
        if self.orbit:
            ignored = [f"--SVD.{name}" for name, default in (("fps", 7), ("motion_bucket_id", 127))
                       if getattr(p, name) != default]
            if ignored:
                warn(f"{' and '.join(ignored)} not used: this SV3D model is not conditioned on fps or motion")
            if s.height is not None and s.width is not None and s.height != s.width:
                raise UsageError(f"--height={s.height} --width={s.width}: SV3D makes square views; give one side")
        elif s.keep_background or s.image_frame_ratio is not None:
            raise UsageError("--keep_background and --image_frame_ratio prepare SV3D inputs; this model is not SV3D")
        try:
            sv3d.resolve_camera(self.input_keys, self.num_frames or 1, s.elevations_deg, s.azimuths_deg)
        except InputError as exc:
            raise UsageError(f"--{exc}" if str(exc).split(":")[0] in ("elevations_deg", "azimuths_deg")
                             else str(exc)) from None

    def load_input(self, path: str):
        """One input image prepared for this model: (uint8 HxWx3, info, warnings)."""
        s = self.settings
        prepared = prepare_input(path, orbit=self.orbit, height=s.height, width=s.width,
                                 keep_background=s.keep_background, image_frame_ratio=s.image_frame_ratio)
        return prepared.pixels, prepared.info, prepared.warnings
        self.condition_image: Optional[str] = None  # video-to-video: the --image of every video

    # ---- settings that make a video what it is -------------------------------------------------
    @property
    def kind(self) -> str:
        return "video" if self.settings.videos else "image"

    def video_settings(self) -> Dict[str, Any]:
        s = self.settings
        record = {k: v for k, v in self.params.to_dict().items() if k != "config"}
        # Left out at their defaults, so that the records of earlier versions still match.
        if record.get("num_clips") == 1:
            record.pop("num_clips")
        if record.get("strength") is None:
            record.pop("strength")
        if s.videos:
            record["condition_image"] = self.condition_image
        record["config"] = os.path.abspath(self.params.config) if isinstance(self.params.config, str) else None
        if record.get("checkpoint"):
            record["checkpoint"] = os.path.abspath(record["checkpoint"])
        record.update(height=s.height, width=s.width, output_format=s.output_format)
        if self.orbit:
            record.update(elevations_deg=s.elevations_deg, azimuths_deg=s.azimuths_deg,
                          keep_background=s.keep_background, image_frame_ratio=s.image_frame_ratio)
        return json.loads(json.dumps(record, default=str))

    # ---- the job ----------------------------------------------------------------------------
    def run(self) -> int:
        t_job = time.perf_counter()
        s, cluster = self.settings, self.cluster
        setup_error: Optional[str] = None
        out_dir = Path(s.output_dir)
        try:
            s.validate()
            self.check_model_inputs()
            out_dir = check_output_dir(s.output_dir, cluster.rank)
        except UsageError as exc:
            setup_error = str(exc)
        images, problems = [], []
        if setup_error is None:
            try:
                images, problems = self._resolve_inputs()
            except UsageError as exc:
                setup_error = str(exc)
        if cluster.is_main and setup_error is None:
            for name in clean_temporaries(out_dir):
                log(f"{self.tag}removed {name!r}, left by an interrupted run")
            if cluster.distributed:
                for old in out_dir.glob(".job_rank*.json"):  # stale files from an earlier job
                    with contextlib.suppress(OSError):
                        old.unlink()

        # Local checks. In a cluster their verdict is shared first, so that every rank stops together.
        job_id = secrets.randbelow(2**31)
        base_seed = s.seed if s.seed is not None and setup_error is None else secrets.randbelow(SEED_MOD)
        shared = cluster.all_gather_ints([0 if setup_error else 1, job_id, base_seed >> 16, base_seed & 0xFFFF,
                                          _hash31("\n".join(images))])
        if setup_error:
            raise UsageError(setup_error)
        if not shared[:, 0].all():
            bad = [int(r) for r in np.nonzero(shared[:, 0] == 0)[0]]
            raise UsageError(f"setup failed on rank(s) {bad}; see their logs")
        if len(set(shared[:, 4].tolist())) != 1:
            raise UsageError(f"workers see different --{self.kind} lists (different working directories or file "
                             "systems?); every worker must see the same files")
        job_id = int(shared[0, 1])
        base_seed = (int(shared[0, 2]) << 16) | int(shared[0, 3])
        log(f"{self.tag}seed: {base_seed}" + (" (random)" if s.seed is None else "")
            + f"; {len(images)} {self.kind}(s); device {self.device_target}, mode {s.mode} "
            f"({'graph' if s.mode == 0 else 'PyNative'}{', the default for this device' if s.mode_chosen else ''})")

        state = RankState(out_dir, cluster, job_id)
        self.meta = {"versions": versions(), "device_target": self.device_target, "mode": s.mode,
                     "world_size": cluster.world_size}
        try:
            if cluster.is_main:
                for spec, reason in problems:
                    report_error(f"--{self.kind} {reason}")
                    state.add("failed", {"image": spec, "reason": reason, "rank": 0})
            mine = [(i, p) for i, p in enumerate(images) if i % cluster.world_size == cluster.rank]
            state.data["assigned"] = len(mine)
            code = self._run_shard(mine, base_seed, out_dir, state)
        finally:
            state.data["timings"]["total_s"] = time.perf_counter() - t_job
            state.finish(keep_beating=cluster.is_main)

        if not cluster.is_main:
            # Leave together with rank 0: MindSpore's cluster does not expect workers to exit while
            # others still compute (the scheduler may then declare the busy ones lost).
            self._wait_for_summary(out_dir, job_id)
            return EXIT_FAILED if state.data["failed"] else code
        if not cluster.distributed:
            return self._write_summary(out_dir, [state.data], job_id, base_seed, images, code)
        try:
            ranks = self._gather_rank_files(out_dir, job_id)
            return self._write_summary(out_dir, ranks, job_id, base_seed, images, code)
        finally:
            state.end_heartbeat()
            for r in range(cluster.world_size):
                with contextlib.suppress(OSError):
                    (out_dir / RANK_FILE.format(rank=r)).unlink()

    def _resolve_inputs(self) -> Tuple[List[str], List[Tuple[str, str]]]:
        """The sorted input list (images, or videos) and its problems; for videos also the one
        conditioning image, whose problems stop the job (it belongs to every video)."""
        s = self.settings
        if self.params.strength is not None and not s.videos:
            raise UsageError("--SVD.strength applies to --video inputs only")
        if not s.videos:
            return resolve_images(s.images)
        if self.params.num_clips > 1:
            raise UsageError("--SVD.num_clips > 1 chains clips from an image; with --video give one clip "
                             "(num_clips=1)")
        self.condition_image = None
        if s.images:
            found, problems = resolve_images(s.images)
            if problems or len(found) != 1:
                why = problems[0][1] if problems else f"{len(found)} images found"
                raise UsageError(f"--image with --video must name one conditioning image ({why})")
            self.condition_image = os.path.abspath(found[0])
        return resolve_images(s.videos, VIDEO_EXTS, "video")

    # ---- resume -----------------------------------------------------------------------------
    def _previous(self, video: Path, sidecar: Path) -> Tuple[str, str]:
        """('new' | 'done' | 'redo' | 'conflict', reason) for an image's outputs from earlier runs."""
        s = self.settings
        record = None
        if sidecar.exists():
            with contextlib.suppress(OSError, ValueError):
                with open(sidecar, encoding="utf-8") as f:
                    record = json.load(f)
            if not isinstance(record, dict):
                record = {}
        exists = video.exists() or video.is_symlink()
        if record is None:
            if not exists:
                return "new", ""
            if s.overwrite:
                if video.is_dir() and s.output_format != "png":
                    return "conflict", f"{str(video)!r} is a directory that is not ours; not replaced"
                return "redo", ""
            return "conflict", (f"{str(video)!r} exists without its sidecar {sidecar.name!r}; pass --overwrite to "
                                f"replace it")
        complete = (record.get("status") == "done" and exists and record.get("video") == video.name
                    and record.get("video_sha256") == file_digest(video))
        if not complete:
            return "redo", "its record is incomplete (an interrupted run)"
        if s.overwrite:
            return "redo", ""
        recorded = record.get("settings") or {}
        now = self.video_settings()
        differing = sorted(k for k in set(now) | set(recorded) if recorded.get(k) != now.get(k))
        if differing:
            return "conflict", (f"{str(video)!r} was made with other settings ({', '.join(differing)} differ); "
                                f"pass --overwrite to replace it or choose another --output_dir")
        return "done", ""

    def _run_shard(self, mine, base_seed: int, out_dir: Path, state: RankState) -> int:
        s = self.settings
        pending = []
        for index, path in mine:
            seed = (base_seed + index) % SEED_MOD
            video, sidecar = output_paths(out_dir, path, seed, s.output_format)
            entry = {"image": path, "index": index, "seed": seed, "output": str(video), "sidecar": str(sidecar),
                     "rank": self.cluster.rank}
            verdict, reason = self._previous(video, sidecar)
            if verdict == "done":
                log(f"{self.tag}skip {path!r}: {str(video)!r} already exists (use --overwrite to redo it)")
                state.add("skipped", entry)
                continue
            if verdict == "conflict":
                state.fail(entry, f"{path!r}: {reason}")
                continue
            if reason:
                log(f"{self.tag}redo {path!r}: {reason}")
            try:
                if self.kind == "video":
                    probe_video(path)  # decoded when its turn comes (its length needs the model's num_frames)
                    warnings = []
                else:
                    _, _, warnings = self.load_input(path)
            except ImageError as exc:
                state.fail(entry, str(exc))
                continue
            for w in warnings:
                warn(w)
            # Only the entry is kept: every image is checked before the model is built, and decoded
            # again when its turn comes, so a folder of thousands is never held in memory at once.
            entry["redo"] = verdict == "redo"
            pending.append(entry)
        if not pending:
            return EXIT_OK

        untrained = self.params.checkpoint is None
        if untrained:
            warn("UNTRAINED MODEL: --SVD.checkpoint is not set, so the weights are random. The videos only show "
                 "the pipeline working from image to file; they are not real results.")
        t0 = time.perf_counter()
        try:
            pipe = self.pipeline_factory(self.params)
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # reported per image, so that a cluster job still gets its summary
            reason = one_line(exc)
            report_error(reason)
            if debug_enabled():
                traceback.print_exc()
            for entry in pending:
                state.add("failed", dict(entry, reason=reason))
            return EXIT_SETUP
        model_load_s = time.perf_counter() - t0
        state.data["timings"]["model_load_s"] = model_load_s
        log(f"{self.tag}model ready in {model_load_s:.1f} s"
            + (" -- UNTRAINED random weights: the videos show the pipeline, not real motion" if untrained else ""))
        memory = PeakMemory(self.device_target)
        for n, entry in enumerate(pending, 1):
            log(f"{self.tag}[{n}/{len(pending)}] {entry['image']!r} -> {entry['output']!r} (seed {entry['seed']})")
            self._one_image(pipe, entry, state, memory, model_load_s, untrained)
        return EXIT_OK

    def _one_image(self, pipe, entry, state: RankState, memory: PeakMemory, model_load_s: float, untrained: bool):
        s = self.settings
        path, seed = entry["image"], entry["seed"]
        video_path, sidecar_path = Path(entry["output"]), Path(entry["sidecar"])
        memory.reset()
        t_img = time.perf_counter()
        store = None
        try:
            extra: Dict[str, Any] = {}
            if sv3d.takes_camera(self.input_keys):
                extra.update(elevations_deg=s.elevations_deg, azimuths_deg=s.azimuths_deg)
            if self.kind == "video":
                frames_in, info, _ = load_video(path, pipe.num_frames, s.height, s.width)
                array = frames_in[0]
                if self.condition_image:
                    array, info["condition_image"], _ = load_image(self.condition_image, frames_in.shape[1],
                                                                   frames_in.shape[2])
                extra["video"] = frames_in
            else:
                array, info, _ = self.load_input(path)
            if self.params.num_clips > 1:
                store = ClipStore(video_path, {"settings": self.video_settings(), "seed": seed,
                                               "input_sha256": file_digest(Path(path))})
                finished = store.load()
                if finished:
                    log(f"{self.tag}resuming {path!r} at clip {len(finished) + 1}/{self.params.num_clips} "
                        f"({len(finished)} finished clip(s) kept from an interrupted run)")
                extra.update(finished_clips=finished, clip_callback=store.save)
            t_load = time.perf_counter() - t_img
            result = pipe.generate(array, seed=seed, progress=s.progress, **extra)
            video = np.asarray(result.video)
            if video.ndim != 4 or video.shape[1] != 3:
                raise ImageError(f"{path!r}: the pipeline returned shape {video.shape}, expected (T,3,H,W)")
            if not np.isfinite(video).all():
                raise ImageError(f"{path!r}: NaN or inf in the decoded frames (stage: decode output, seed {seed}); "
                                 f"nothing written")
            frames = to_uint8(video)
            record = self._record(entry, frames, info, untrained)
            if getattr(result, "camera", None):
                record["camera"] = {k: np.asarray(v).tolist() for k, v in result.camera.items()}
            # The sidecar goes first as "writing", so that a run killed before the final record is
            # recognised as ours and redone.
            write_json(sidecar_path, dict(record, status="writing"))
            t_write = time.perf_counter()
            write_video(frames, video_path, s.output_format, record["fps"], overwrite=entry.get("redo", False))
            t_write = time.perf_counter() - t_write
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # one image's failure must not stop the others
            reason = one_line(exc)
            if isinstance(exc, SVDError) and path not in reason and repr(path) not in reason:
                reason = f"{path!r}: {reason}"
            with contextlib.suppress(OSError):
                if sidecar_path.exists() and not (video_path.exists() or video_path.is_symlink()):
                    sidecar_path.unlink()
            state.fail(entry, reason)
            if debug_enabled():
                traceback.print_exc()
            return
        pt = dict(result.timings or {})
        steps = [float(x) for x in pt.get("step_s", [])]
        timings = {"load_image_s": t_load, "compile_s": pt.get("compile_s"), "step_s": steps,
                   "mean_step_s": float(np.mean(steps)) if steps else None, "decode_s": pt.get("decode_s"),
                   "pipeline_total_s": pt.get("total_s"), "write_s": t_write,
                   "total_s": time.perf_counter() - t_img, "model_load_s": model_load_s}
        peak = memory.read()
        record.update(timings=timings, memory=peak, status="done", video_sha256=file_digest(video_path))
        try:
            write_json(sidecar_path, record)
        except OSError as exc:
            remove_path(video_path)
            with contextlib.suppress(OSError):
                sidecar_path.unlink()
            state.fail(entry, f"{path!r}: {exc}; video removed")
            return
        if store is not None:
            store.remove()  # the video and its complete record exist: the clips are not needed any more
        entry["timings"] = {k: v for k, v in timings.items() if k != "step_s"}
        entry["memory"] = peak
        entry.pop("redo", None)
        state.add("done", entry)
        per_step = f"{timings['mean_step_s']:.2f} s/step" if steps else "s/step n/a"
        comp, dec = pt.get("compile_s"), pt.get("decode_s")
        log(f"{self.tag}done {video_path.name!r}: {len(steps)} steps, {per_step}, "
            f"decode {dec if dec is None else f'{dec:.2f}'} s, compile {comp if comp is None else f'{comp:.2f}'} s, "
            f"total {timings['total_s']:.1f} s, peak host mem {format_bytes(peak['peak_host_bytes'])}"
            + (f", peak device mem {format_bytes(peak['peak_device_bytes'])}"
               if peak["peak_device_bytes"] is not None else "")
            + (" [UNTRAINED]" if untrained else ""))

    def _record(self, entry, frames: np.ndarray, info, untrained: bool) -> Dict[str, Any]:
        s = self.settings
        t, h, w = frames.shape[:3]
        return {
            "video": Path(entry["output"]).name, "format": s.output_format, "frames": t, "width": w, "height": h,
            "fps": self.params.fps, "seed": entry["seed"], "clips": self.params.num_clips, "input_kind": self.kind,
            "base_seed": (entry["seed"] - entry["index"]) % SEED_MOD, "index_in_job": entry["index"],
            "input": info, "untrained": untrained, "settings": self.video_settings(),
            "pipeline": json.loads(json.dumps(self.params.to_dict(), default=str)),
            "parameters": json.loads(json.dumps(s.parameters, default=str)),
            "reproduce": self.reproduce_command(entry["image"], entry["seed"]),
            **self.meta, "rank": self.cluster.rank, "host": socket.gethostname(),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }

    def reproduce_command(self, image: str, seed: int) -> str:
        s = self.settings
        parts = ["python", "image_to_video.py"]
        parts += [f"--SVD.{k}={v}" for k, v in self.params.to_dict().items() if v is not None]
        parts += [f"--{k}={getattr(s, k)}" for k in ("height", "width", "image_frame_ratio") if getattr(s, k) is not None]
        parts += [f"--{k}={json.dumps(getattr(s, k))}" for k in ("elevations_deg", "azimuths_deg")
                  if getattr(s, k) is not None]
        parts += ["--keep_background=true"] if s.keep_background else []
        inputs = [f"--image={image}"]
        if self.kind == "video":
            inputs = [f"--video={image}"] + ([f"--image={self.condition_image}"] if self.condition_image else [])
        parts += [f"--mode={s.mode}"] + inputs + [f"--seed={seed}", f"--output_format={s.output_format}",
                                                  f"--output_dir={s.output_dir}"]
        return " ".join(shlex.quote(p) for p in parts)

    # ---- across ranks -----------------------------------------------------------------------
    def _wait_for_summary(self, out_dir: Path, job_id: int) -> None:
        """Ranks other than 0: wait until rank 0 has written this job's summary, or has been silent
        (no heartbeat in its results file) for dist_timeout seconds."""
        timeout = self.settings.dist_timeout
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
                warn(f"{self.tag}rank 0 silent for {timeout:.0f} s; leaving without its job summary")
                return
            time.sleep(0.5)

    def _gather_rank_files(self, out_dir: Path, job_id: int) -> List[Dict]:
        """Rank 0: wait until every rank has written its finished results file."""
        world, timeout = self.cluster.world_size, self.settings.dist_timeout
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
                                              "reason": f"rank {r} sent no results for {timeout:.0f} s (crashed, "
                                              f"or {str(out_dir)!r} is not shared between servers)"}]}
            if len(results) < world:
                if time.monotonic() - waiting_note > 60:
                    log(f"[rank 0] waiting for rank(s) {[r for r in range(world) if r not in results]} to finish")
                    waiting_note = time.monotonic()
                time.sleep(0.5)
        return [results[r] for r in range(world)]

    def _write_summary(self, out_dir: Path, ranks: List[Dict], job_id: int, base_seed: int, images: List[str],
                       code: int) -> int:
        done = sorted((e for r in ranks for e in r.get("done", [])), key=lambda e: e["index"])
        skipped = sorted((e for r in ranks for e in r.get("skipped", [])), key=lambda e: e["index"])
        failed = [e for r in ranks for e in r.get("failed", [])]
        failed.sort(key=lambda e: (e.get("index", -1), e["image"]))
        summary = {
            "job_id": job_id, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "world_size": self.cluster.world_size, "base_seed": base_seed, "output_dir": str(out_dir),
            "output_format": self.settings.output_format, "num_images": len(images),
            "counts": {"done": len(done), "skipped": len(skipped), "failed": len(failed)},
            "ok": not failed, "done": done, "skipped": skipped,
            "failed": [{"image": e["image"], "reason": e.get("reason", "?"), "rank": e.get("rank"),
                        "seed": e.get("seed")} for e in failed],
            "ranks": [{"rank": r.get("rank"), "host": r.get("host"), "pid": r.get("pid"),
                       "lost": r.get("lost", False), "assigned": r.get("assigned"),
                       "done": len(r.get("done", [])), "skipped": len(r.get("skipped", [])),
                       "failed": len(r.get("failed", [])), "timings": r.get("timings", {}),
                       "mean_step_s": _mean([e.get("timings", {}).get("mean_step_s") for e in r.get("done", [])])}
                      for r in ranks],
        }
        try:
            write_json(out_dir / SUMMARY_NAME, summary)
        except OSError as exc:
            report_error(str(exc))
            code = EXIT_FAILED if code == EXIT_OK else code
        log(f"job: {len(done)} done, {len(skipped)} skipped, {len(failed)} failed ({str(out_dir / SUMMARY_NAME)!r})")
        for e in summary["failed"]:
            reason = e["reason"] if e["image"] in e["reason"] else f"{e['image']!r}: {e['reason']}"
            print(f"FAILED {reason}", file=sys.stderr, flush=True)
        if failed:
            return EXIT_SETUP if code == EXIT_SETUP and not done and not skipped else EXIT_FAILED
        return code
