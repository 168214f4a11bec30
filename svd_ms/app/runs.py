"""One web job from its request to its files: the pipeline call for the job's kind (image to
video, chained clips, orbit, video to video), its progress, its LoRA set, the finished clips of a
chain shown as they arrive, and the H.264 mp4 + sidecar it leaves (svd_ms.record, the command
line's format, with a reproduce command for the same kind of run). Knows nothing of Gradio."""
import contextlib
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

import numpy as np

from .. import record
from ..errors import GenerationCancelled, SVDError
from ..media import remove_path, to_uint8, write_json, write_video
from ..params import SVDParams
from ..runtime import PeakMemory

IMAGE_TO_VIDEO, ORBIT, VIDEO_TO_VIDEO = "image_to_video", "orbit", "video_to_video"
KINDS = (IMAGE_TO_VIDEO, ORBIT, VIDEO_TO_VIDEO)
THUMBNAIL_SIDE = 160
# A live preview at every sampling step: one 4x3 matrix product on the latents (svd_ms.app.preview;
# benchmarks/preview_cost.py measures it at every step: under 0.2 % of a step of the tiny model).
PREVIEW_EVERY = 1


def live_preview(info) -> Optional[np.ndarray]:
    """A strip of a few frames of the step's denoised estimate, mapped to RGB (svd_ms.app.preview);
    None where the pipeline gives no estimate."""
    denoised = getattr(info, "denoised", None)
    if denoised is None:
        return None
    from .preview import preview_frames, preview_strip
    return preview_strip(preview_frames(denoised))


def thumbnail(frame: np.ndarray) -> np.ndarray:
    """A small uint8 copy of one (H, W, 3) frame for the history, by striding (no resampling cost)."""
    step = max(1, -(-max(frame.shape[:2]) // THUMBNAIL_SIDE))
    return np.ascontiguousarray(frame[::step, ::step])


class Progress:
    """Counts sampling steps and decoded chunks over every clip of a run. Video-to-video skips the
    first steps of the schedule: those count as done when its first step reports."""

    def __init__(self, job, steps: int, chunks: int, clips: int):
        self.job, self.steps, self.chunks = job, steps, chunks
        job.progress.total = clips * (steps + chunks)

    def __call__(self, info) -> bool:
        p, clip = self.job.progress, int(getattr(info, "clip", 0) or 0)
        before = clip * (self.steps + self.chunks)
        if info.stage == "sampling":
            p.done = before + (self.steps - info.total) + info.index + 1
            unit = "step"
            if self.job.preview_fn is not None and (info.index % PREVIEW_EVERY == 0 or info.index + 1 == info.total):
                self.job.set_preview(self.job.preview_fn(info))
        else:
            p.done = before + self.steps + info.index + 1
            unit = "chunk"
        p.stage = info.stage
        clip_text = f"clip {clip + 1}/{self.job.num_clips}, " if self.job.num_clips > 1 else ""
        p.detail = f"{clip_text}{info.stage} {unit} {info.index + 1}/{info.total}"
        return not self.job.cancel_requested


def pipeline_call(service, job, params: SVDParams, on_step, on_clip) -> Dict[str, Any]:
    """The keyword arguments of `pipeline.generate` for this job's kind."""
    req = job.request
    kwargs: Dict[str, Any] = dict(req.overrides, callback=on_step)
    if req.kind == ORBIT and req.camera:
        kwargs.update({k: v for k, v in req.camera.items() if v is not None})
    if req.kind == VIDEO_TO_VIDEO:
        kwargs.update(video=req.video, height=req.height, width=req.width)
    elif params.num_clips > 1:
        kwargs["clip_callback"] = on_clip
    return kwargs


def run_job(service, job) -> None:
    """Run `job` on the service's pipeline and leave its files; raises on cancel or failure (its
    files, finished clips included, removed)."""
    pipe, req = service.pipeline, job.request
    service.use_lora(req.lora)
    params = pipe.call_params(**req.overrides)
    sizes = pipe.resolve(params)
    job.num_clips = params.num_clips
    job.preview_fn = live_preview
    on_step = Progress(job, sizes["num_steps"], -(-sizes["num_frames"] // sizes["decode_chunk_size"]),
                       params.num_clips)
    base = f"web_{datetime.now().strftime('%Y%m%d-%H%M%S')}_{job.id}_seed{req.seed}"

    def on_clip(clip) -> None:  # a finished clip of a chain, shown on the page while the next one runs
        path = service.output_dir / f"{base}_clip{clip.index + 1}.mp4"
        write_video(to_uint8(np.clip((np.asarray(clip.frames) + 1.0) / 2.0, 0.0, 1.0)), path, "mp4", params.fps)
        job.clips.append(path)

    memory = PeakMemory(service.device_target)
    memory.reset()
    t0 = time.perf_counter()
    try:
        result = pipe.generate(req.image, seed=req.seed, **pipeline_call(service, job, params, on_step, on_clip))
        if job.cancel_requested:
            raise GenerationCancelled("cancelled")
        video = np.asarray(result.video)
        if video.ndim != 4 or video.shape[1] != 3:
            raise SVDError(f"the pipeline returned shape {video.shape}, expected (frames, 3, height, width)")
        if not np.isfinite(video).all():
            raise SVDError("NaN or inf in the decoded frames; nothing written")
        job.progress.stage, job.progress.detail = "writing", "writing the video"
        frames = to_uint8(video)
        video_path, sidecar_path = service.output_dir / f"{base}.mp4", service.output_dir / f"{base}.json"
        sidecar = new_record(service, job, params, sizes, frames, result, video_path)
        t_write = time.perf_counter()
        write_video(frames, video_path, "mp4", params.fps)
        try:
            timings = record.timings(result.timings, queued_s=job.started - job.submitted,
                                     write_s=time.perf_counter() - t_write, total_s=time.perf_counter() - t0,
                                     model_load_s=service.model_load_s)
            sidecar = record.complete_record(sidecar, video_path, timings, memory.read())
            write_json(sidecar_path, sidecar)
        except BaseException:
            remove_path(video_path)
            raise
    except BaseException:
        remove_files(job.clips)
        job.clips = []
        raise
    job.video_path, job.sidecar_path, job.record = video_path, sidecar_path, sidecar
    job.thumbnail = thumbnail(frames[len(frames) // 2])
    job.progress.done = job.progress.total


def remove_files(paths: List[Optional[Path]]) -> None:
    for p in paths:
        if p is not None:
            with contextlib.suppress(OSError):
                p.unlink()


def output_settings(req) -> Dict[str, Any]:
    """The request's settings outside SVDParams that change the video (the CLI job's names)."""
    out: Dict[str, Any] = {"height": req.height, "width": req.width, "output_format": "mp4"}
    if req.kind == ORBIT:
        camera = req.camera or {}
        out.update(elevations_deg=camera.get("elevations_deg"), azimuths_deg=camera.get("azimuths_deg"),
                   keep_background=bool(req.keep_background), image_frame_ratio=None)
    return out


def new_record(service, job, params: SVDParams, sizes: Mapping[str, Any], frames: np.ndarray, result,
               video_path: Path) -> Dict[str, Any]:
    """The sidecar (svd_ms.record, the batch job's format). The reproduce command names the
    uploads as the visitor called them and the LoRA files by their path in --lora_dir: run with
    those files, it makes the same video, since the page prepares uploads as the command line does."""
    req = job.request
    seed = req.seed if getattr(result, "seed", None) is None else int(result.seed)
    if req.lora:
        params = params.replace(lora=[f"{service.lora_path(name)}:{scale}" for name, scale in req.lora])
    output = output_settings(req)
    flags = dict({k: v for k, v in output.items() if k != "keep_background"},
                 keep_background=True if output.get("keep_background") else None,
                 mode=service.mode, device_target=service.device_target, seed=seed)
    if req.kind == VIDEO_TO_VIDEO:
        inputs = [("video", req.video_info.get("path") or "<the uploaded video>")]
    else:
        inputs = [("image", req.image_info.get("path") or "<the uploaded image>")]
    extra: Dict[str, Any] = {"kind": req.kind}
    if getattr(result, "camera", None):
        extra["camera"] = {k: np.asarray(v).tolist() for k, v in result.camera.items()}
    info = dict(req.video_info, condition="first frame") if req.kind == VIDEO_TO_VIDEO else req.image_info
    return record.new_record(
        video_path=video_path, output_format="mp4", frames=frames, fps=params.fps, seed=seed, params=params,
        settings=record.video_settings(params, output), resolved=sizes, input_info=info,
        untrained=service.untrained, reproduce=record.reproduce_command(params, inputs, flags),
        context=service.run_context, source="web page", **extra)
