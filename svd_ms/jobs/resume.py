"""Resuming a job: what earlier runs left in the output folder, and whether it counts.

An input is done only when its sidecar is complete (`record.is_complete`: status done, the video
there and matching its checksum) and was made with the same settings (`record.differing_settings`);
with other settings it is refused, never skipped and never silently overwritten. A chained video's
finished clips (`ClipStore`) are reused only when made with the same settings, seed and input file.
"""
import contextlib
import json
import os
import re
from pathlib import Path
from typing import Any, Dict, List, Mapping, Tuple

import numpy as np

from ..media import is_temporary, remove_path, temporary_name, write_json
from ..record import differing_settings, is_complete, plain
from .console import log


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


def read_record(sidecar: Path):
    """The JSON of a sidecar; {} when it exists but cannot be read; None when there is none."""
    if not sidecar.exists():
        return None
    record = None
    with contextlib.suppress(OSError, ValueError):
        with open(sidecar, encoding="utf-8") as f:
            record = json.load(f)
    return record if isinstance(record, dict) else {}


def previous_outputs(video: Path, sidecar: Path, settings: Mapping[str, Any], overwrite: bool,
                     output_format: str) -> Tuple[str, str]:
    """('new' | 'done' | 'redo' | 'conflict', reason) for one input's outputs from earlier runs;
    `settings` are this run's (`record.video_settings`)."""
    record = read_record(sidecar)
    exists = video.exists() or video.is_symlink()
    if record is None:
        if not exists:
            return "new", ""
        if overwrite:
            if video.is_dir() and output_format != "png":
                return "conflict", f"{str(video)!r} is a directory that is not ours; not replaced"
            return "redo", ""
        return "conflict", (f"{str(video)!r} exists without its sidecar {sidecar.name!r}; pass --overwrite to "
                            f"replace it")
    if not is_complete(record, video):
        return "redo", "its record is incomplete (an interrupted run)"
    if overwrite:
        return "redo", ""
    differing = differing_settings(record.get("settings") or {}, settings)
    if differing:
        return "conflict", (f"{str(video)!r} was made with other settings ({', '.join(differing)} differ); "
                            f"pass --overwrite to replace it or choose another --output_dir")
    return "done", ""


class ClipStore:
    """The finished clips of one chained video, in a hidden folder next to its output: one .npz per
    clip (frames before clamping, latents, conditioning image, seed) and key.json, what they were
    made with. Clips made with anything else (settings, seed, input file) are discarded, never
    reused. Each file is written under a temporary name and renamed into place."""

    def __init__(self, video_path: Path, key: Dict[str, Any]):
        self.folder = video_path.with_name(f".{video_path.name}.clips")
        self.key = plain(key)

    def _clip_path(self, index: int) -> Path:
        return self.folder / f"clip{index:04d}.npz"

    def load(self) -> List[Any]:
        """The clips 0..m-1 finished by an earlier run (stops at the first missing or unreadable one)."""
        from ..pipeline import ClipResult  # the job itself runs without the model code

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
