"""The record of one video: the JSON sidecar written next to it by the batch job (image_to_video.py)
and by the web page, built here and nowhere else.

A sidecar holds
- `settings`: what makes the video what it is: every SVDParams field as the value it had (dicts such
  as sampler_params and lists such as lora as JSON values, model files as absolute paths) and the
  output's own settings (height, width, format; SV3D camera and cut-out flags; the conditioning
  image of video-to-video). `differing_settings` compares two of them: equal settings, seed and
  input make the same video;
- `pipeline`: the SVDParams fields as given, `resolved`: the frame count, steps, decode chunk and
  noise augmentation the pipeline actually used (`pipe.resolve`), `seed`: the seed actually used;
- `timings`, `memory`, `versions`, `device_target`, `mode`, `host`, `created`;
- `video_sha256`: the output check (`file_digest` of the video file or frame folder), written
  with `status: "done"` once the video is complete;
- `reproduce`: a command that, run as printed, makes the identical video.
"""
import hashlib
import inspect
import json
import os
import shlex
import socket
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from .params import SVDParams
from .runtime import versions

# The command-line entry point every reproduce command runs (absolute: it runs from any directory).
SCRIPT = Path(__file__).resolve().parents[1] / "image_to_video.py"
# SVDParams fields naming files: recorded as absolute paths, so that a record means one file.
FILE_FIELDS = ("config", "checkpoint", "unet_weights")


def plain(value: Any) -> Any:
    """`value` as JSON data: dicts and lists kept as values (never a placeholder), paths and other
    objects as text, numpy numbers and arrays as Python numbers and lists."""
    def convert(obj):
        if isinstance(obj, np.ndarray):
            return obj.tolist()
        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, (set, frozenset)):
            return sorted(obj)
        return os.fspath(obj) if isinstance(obj, os.PathLike) else str(obj)
    return json.loads(json.dumps(value, default=convert))


def params_values(params: SVDParams) -> Dict[str, Any]:
    """Every SVDParams field as the JSON value it had (the names come from `to_dict`, the values
    from the object itself, so that no field is ever summarised)."""
    return {name: plain(getattr(params, name)) for name in params.to_dict()}


def _absolute(path: Any) -> Any:
    """A file's absolute path; a value that names no file here (a cached Hugging Face model id)
    stays as it was given."""
    if isinstance(path, (str, os.PathLike)) and path and os.path.exists(path):
        return os.path.abspath(path)
    return path


def _absolute_lora(spec: Any) -> Any:
    """A LoRA spec 'PATH' or 'PATH:SCALE' with its path made absolute."""
    if isinstance(spec, (list, tuple)):
        return [_absolute(spec[0]), *spec[1:]]
    from .lora import parse_lora_spec
    path, scale = parse_lora_spec(spec)
    text = os.path.abspath(path)
    return text if str(spec) == str(path) else f"{text}:{scale:g}"


def absolute_params_values(params: SVDParams) -> Dict[str, Any]:
    """`params_values` with every file it names as an absolute path."""
    values = params_values(params)
    for name in FILE_FIELDS:
        values[name] = _absolute(values.get(name))
    if values.get("lora"):
        values["lora"] = [_absolute_lora(s) for s in values["lora"]]
    return values


def video_settings(params: SVDParams, output: Mapping[str, Any]) -> Dict[str, Any]:
    """The settings that make a video what it is: every SVDParams field (absolute file paths) and
    the output's own settings (`output`: height, width, output_format, ...)."""
    settings = absolute_params_values(params)
    settings.update(plain(dict(output)))
    return settings


def param_defaults() -> Dict[str, Any]:
    """The default of every SVDParams field that has one."""
    return {name: p.default for name, p in inspect.signature(SVDParams).parameters.items()
            if p.default is not inspect.Parameter.empty}


def differing_settings(recorded: Mapping[str, Any], now: Mapping[str, Any]) -> List[str]:
    """The names of the settings that differ between a record and this run, sorted. A setting an
    older record lacks counts as its default (None, or the SVDParams default), so a record written
    before a field existed still matches a run that leaves the field unset."""
    defaults = param_defaults()
    missing = object()
    differ = []
    for name in sorted(set(recorded) | set(now)):
        old, new = recorded.get(name, missing), now.get(name, missing)
        if old is missing:
            old = defaults.get(name)
        if new is missing:
            new = defaults.get(name)
        if old != new:
            differ.append(name)
    return differ


def _flag_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(plain(value))
    return str(value)


def reproduce_command(params: SVDParams, inputs: Sequence[Tuple[str, str]],
                      flags: Mapping[str, Any]) -> str:
    """The shell command that makes the same video again, run as printed from any directory:
    `python <repo>/image_to_video.py`, every SVDParams value that is set (files absolute, dicts and
    lists as JSON), then `flags` ({name: value}; None left out) and the `inputs` ((flag, path)
    pairs, e.g. ("image", "/data/a.png")), as given: pass absolute paths for a command that runs
    from any directory."""
    parts = ["python", str(SCRIPT)]
    parts += [f"--SVD.{k}={_flag_value(v)}" for k, v in absolute_params_values(params).items() if v is not None]
    parts += [f"--{k}={_flag_value(v)}" for k, v in flags.items() if v is not None]
    parts += [f"--{flag}={path}" for flag, path in inputs]
    return " ".join(shlex.quote(p) for p in parts)


def file_digest(path: Path) -> str:
    """The output check: SHA-256 of a video file, or of a folder of frames (names and contents, in
    order)."""
    path = Path(path)
    digest = hashlib.sha256()
    files = sorted(path.iterdir()) if path.is_dir() else [path]
    for f in files:
        if path.is_dir():
            digest.update(f.name.encode())
        with open(f, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def run_context(device_target: str, mode: int) -> Dict[str, Any]:
    """What every record of one process shares: library versions, device and execution mode."""
    return {"versions": versions(), "device_target": device_target, "mode": mode}


def timings(pipeline_timings: Optional[Mapping[str, Any]], **measured: Optional[float]) -> Dict[str, Any]:
    """The timings of a record: the pipeline's own (compile, steps, decode, total) and what the
    caller measured around it (`measured`, e.g. write_s, total_s, model_load_s)."""
    pt = dict(pipeline_timings or {})
    steps = [float(x) for x in pt.get("step_s", [])]
    out = {"compile_s": pt.get("compile_s"), "step_s": steps, "mean_step_s": float(np.mean(steps)) if steps else None,
           "decode_s": pt.get("decode_s"), "pipeline_total_s": pt.get("total_s")}
    out.update(measured)
    return plain(out)


def new_record(*, video_path: Path, output_format: str, frames: np.ndarray, fps: int, seed: int,
               params: SVDParams, settings: Mapping[str, Any], resolved: Optional[Mapping[str, Any]],
               input_info: Mapping[str, Any], untrained: bool, reproduce: str, context: Mapping[str, Any],
               source: str, **extra: Any) -> Dict[str, Any]:
    """The record of a video about to be written (status 'writing'); `complete_record` finishes
    it. `frames`: the uint8 (T, H, W, 3) frames written; `extra`: caller-specific fields."""
    t, h, w = np.shape(frames)[:3]
    record = {
        "video": Path(video_path).name, "format": output_format, "frames": int(t), "width": int(w), "height": int(h),
        "fps": fps, "seed": int(seed), "clips": params.num_clips, "input": plain(dict(input_info)),
        "untrained": bool(untrained), "settings": plain(dict(settings)), "pipeline": params_values(params),
        "resolved": plain(dict(resolved)) if resolved is not None else None, "reproduce": reproduce,
        **plain(dict(context)), "host": socket.gethostname(), "source": source,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "status": "writing",
    }
    record.update(plain(extra))
    return record


def complete_record(record: Dict[str, Any], video_path: Path, timing: Mapping[str, Any],
                    memory: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """The record of a finished video: its timings, peak memory, output check and status 'done'."""
    return dict(record, timings=plain(dict(timing)), memory=plain(dict(memory)) if memory is not None else None,
                status="done", video_sha256=file_digest(video_path))


def is_complete(record: Any, video_path: Path) -> bool:
    """A record of a finished video whose file is there and matches its output check."""
    video_path = Path(video_path)
    return (isinstance(record, dict) and record.get("status") == "done"
            and (video_path.exists() or video_path.is_symlink()) and record.get("video") == video_path.name
            and record.get("video_sha256") == file_digest(video_path))
