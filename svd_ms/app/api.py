"""The page's functions for scripts: endpoints `gradio_client` calls by name (docs/web_api.md),
registered inside the page's Blocks by `register_api`.

    /image_to_video  an uploaded image and the page's settings -> (the mp4, the sidecar as JSON text)
    /status          this client's jobs (state, queue position, progress) and the queue's length
    /cancel          cancel this client's unfinished jobs

Requests go through the page's own path: the same upload checks and preparation
(svd_ms.app.uploads), the same service queue, the same files; a script's video equals the page's
for the same settings and seed. A client is known by its Gradio session, so /cancel and /status
see the jobs that client started. Errors reach the script as one line (gradio_client's AppError).
"""
import json
import os
import threading
from collections import OrderedDict
from typing import Any, Dict, List, Optional

from ..errors import SVDError, one_line
from ..seeds import draw_seed
from .service import DONE, FAILED, QUEUED, Job, Request
from .uploads import check_upload, prepare_upload

# How many clients' jobs /status remembers, and how many jobs each: enough for a script's
# session, bounded so that a long-running server does not grow.
REMEMBERED_CLIENTS, REMEMBERED_JOBS = 256, 16


class ClientJobs:
    """The jobs each client (Gradio session) started through the API, newest last."""

    def __init__(self):
        self._lock = threading.Lock()
        self._jobs: "OrderedDict[str, List[Job]]" = OrderedDict()

    def add(self, owner: str, job: Job) -> None:
        with self._lock:
            jobs = self._jobs.pop(owner, [])
            self._jobs[owner] = (jobs + [job])[-REMEMBERED_JOBS:]
            while len(self._jobs) > REMEMBERED_CLIENTS:
                self._jobs.popitem(last=False)

    def of(self, owner: str) -> List[Job]:
        with self._lock:
            return list(self._jobs.get(owner, []))


def uploaded_path(file: Any) -> str:
    """The server path of a file the client uploaded (gradio_client's `handle_file` sends it
    first and passes its FileData). Only Gradio's upload folder is accepted: a script cannot name
    another file of this machine."""
    from gradio.utils import get_upload_folder, is_in_or_equal

    path = file.get("path") if isinstance(file, dict) else None
    if not isinstance(path, str) or not path:
        raise SVDError("image: give an uploaded file (gradio_client.handle_file(path)), not "
                       f"{type(file).__name__}")
    if not is_in_or_equal(os.path.realpath(path), os.path.realpath(get_upload_folder())):
        raise SVDError("image: only a file uploaded with the request is read (gradio_client.handle_file)")
    return path


def job_view(service, job: Job) -> Dict[str, Any]:
    p = job.progress
    return {"id": job.id, "state": job.state, "position": service.position(job) if job.state == QUEUED else 0,
            "stage": p.stage, "done": p.done, "total": p.total, "error": job.error,
            "video": os.path.basename(job.video_path) if job.video_path else None}


def register_api(service, info) -> None:
    """Register the named endpoints on the Blocks being built (called inside its `with` block)."""
    import gradio as gr

    jobs = ClientJobs()

    def image_to_video(image: dict, seed: Optional[int] = None, num_frames: Optional[int] = None,
                       num_steps: Optional[int] = None, width: Optional[int] = None, height: Optional[int] = None,
                       motion_bucket_id: Optional[int] = None, fps: Optional[int] = None,
                       noise_aug_strength: Optional[float] = None, decode_chunk_size: Optional[int] = None,
                       sampler: Optional[str] = None, guider: Optional[str] = None,
                       min_guidance_scale: Optional[float] = None, max_guidance_scale: Optional[float] = None,
                       cache: Optional[str] = None, cache_interval: Optional[int] = None,
                       cache_branch: Optional[int] = None, request: gr.Request = None) -> tuple[dict, str]:
        """Make a video from an uploaded image; returns (the mp4, its sidecar as JSON text).
        Settings left out (None) are the served model's; `seed` None draws one (the sidecar
        records it)."""
        settings = {"num_frames": num_frames, "num_steps": num_steps, "motion_bucket_id": motion_bucket_id,
                    "fps": fps, "noise_aug_strength": noise_aug_strength, "decode_chunk_size": decode_chunk_size,
                    "sampler": sampler, "guider": guider, "min_guidance_scale": min_guidance_scale,
                    "max_guidance_scale": max_guidance_scale, "cache": cache, "cache_interval": cache_interval,
                    "cache_branch": cache_branch}
        owner = getattr(request, "session_hash", None) or "anonymous"
        try:
            path = uploaded_path(image)
            img, image_info = check_upload(path, info.limits, name=image.get("orig_name"))
            array, image_info, _ = prepare_upload(img, image_info, height, width, image_info["path"])
            job = service.submit(Request(array, draw_seed() if seed is None else seed,
                                         {k: v for k, v in settings.items() if v is not None}, image_info,
                                         owner=owner, height=height, width=width))
        except SVDError as exc:
            raise gr.Error(one_line(exc), print_exception=False) from None
        jobs.add(owner, job)
        job.wait()
        if job.state != DONE:
            raise gr.Error(job.error or job.state if job.state == FAILED else "cancelled", print_exception=False)
        video = {"path": str(job.video_path), "orig_name": job.video_path.name, "mime_type": "video/mp4",
                 "meta": {"_type": "gradio.FileData"}}
        # JSON text, not a dict: gradio_client would take any dict with a "path" in the record
        # (the input's) for a file to download.
        return video, json.dumps(job.record)

    def status(request: gr.Request = None) -> dict:
        """This client's recent jobs (id, state, queue position, progress) and the queue's length."""
        owner = getattr(request, "session_hash", None) or "anonymous"
        return {"queue_length": service.queue_length(), "max_queue": service.max_queue,
                "jobs": [job_view(service, job) for job in jobs.of(owner)]}

    def cancel(request: gr.Request = None) -> int:
        """Cancel this client's unfinished jobs (a running one stops at its next step); returns how many."""
        return service.cancel_owner(getattr(request, "session_hash", None) or "anonymous")

    # The service orders and limits the jobs; Gradio only holds the waiting connections, as for
    # the page's Generate button. Queries and cancels never wait behind a generation.
    gr.api(image_to_video, api_name="image_to_video", concurrency_limit=service.max_queue + 2,
           concurrency_id="svd_api_generate")
    gr.api(status, api_name="status", concurrency_limit=None)
    gr.api(cancel, api_name="cancel", concurrency_limit=None)
