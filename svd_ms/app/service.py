"""The generation service behind the web page: one model, one device, one generation at a time.

Requests wait in a first-in-first-out queue and can read their position; one worker thread owns
the pipeline (it is built there once, at start, and kept) and runs the jobs in turn. A job is
cancelled through the pipeline's step callback returning False; a cancelled or failed job ends
like a finished one, so the next job starts. Each finished job leaves an H.264 mp4 and its JSON
sidecar in the service's own output directory, and nothing else anywhere. Knows nothing of
Gradio.
"""
import contextlib
import itertools
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Deque, Dict, Mapping, Optional

import numpy as np

from .. import record
from ..errors import GenerationCancelled, SVDError, UsageError, one_line
from ..jobs.settings import check_output_dir
from ..media import remove_path, to_uint8, write_json, write_video
from ..params import SVDParams
from ..runtime import PeakMemory
from ..seeds import check_seed

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
FINAL_STATES = (DONE, FAILED, CANCELLED)


class QueueFullError(SVDError):
    pass


@dataclass
class Request:
    """One generation: the conditioning frame (uint8 HxWx3, sides multiples of 64), its seed and the
    per-call sampling settings (`SVDParams` fields). `height`/`width`: the size the visitor asked
    for, as the command line's --height/--width (None: the image's own size), recorded so that the
    sidecar's reproduce command prepares the upload the same way."""
    image: np.ndarray
    seed: int
    overrides: Dict[str, Any] = field(default_factory=dict)
    image_info: Dict[str, Any] = field(default_factory=dict)
    owner: Optional[str] = None  # the page session that asked, so that its cancel button finds it
    height: Optional[int] = None
    width: Optional[int] = None


@dataclass
class Progress:
    stage: str = "queued"  # queued, preparing, sampling, decoding, writing, then the final state
    done: int = 0          # sampling steps + decoded chunks finished
    total: int = 0
    detail: str = ""


class Job:
    def __init__(self, job_id: str, request: Request):
        self.id = job_id
        self.request = request
        self.state = QUEUED
        self.progress = Progress()
        self.error: Optional[str] = None
        self.video_path: Optional[Path] = None
        self.sidecar_path: Optional[Path] = None
        self.record: Optional[Dict[str, Any]] = None
        self.submitted = time.time()
        self.started: Optional[float] = None
        self.finished: Optional[float] = None
        self._cancel = threading.Event()
        self._done = threading.Event()

    @property
    def cancel_requested(self) -> bool:
        return self._cancel.is_set()

    @property
    def is_final(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: Optional[float] = None) -> bool:
        return self._done.wait(timeout)

    def _finish(self, state: str, error: Optional[str] = None) -> None:
        self.state, self.error, self.finished = state, error, time.time()
        self.progress.stage = state
        self._done.set()


class GenerationService:
    """Owns one pipeline (made by `pipeline_factory(params)` in the worker thread) and runs one
    job at a time on its device.

    The pipeline needs `generate(uint8 HxWx3, seed=, callback=, **overrides)` returning a result
    with `.video` (T, 3, H, W) in [0, 1] and `.timings`, `call_params(**overrides)` (validation),
    `resolve(params)` (concrete frames, steps and decode chunk) and `.untrained`.
    """

    def __init__(self, params: SVDParams, pipeline_factory: Callable[[SVDParams], Any], output_dir: str,
                 device_target: str = "CPU", mode: int = 1, max_queue: int = 8, keep_outputs: int = 100,
                 setup: Optional[Callable[[], None]] = None):
        if max_queue < 1:
            raise UsageError(f"--max_queue={max_queue} must be at least 1")
        if keep_outputs < 1:
            raise UsageError(f"--keep_outputs={keep_outputs} must be at least 1")
        self.params = params
        self.pipeline_factory = pipeline_factory
        self.output_dir = check_output_dir(output_dir).resolve()
        self.device_target = device_target
        self.mode = mode
        self.max_queue = max_queue
        self.keep_outputs = keep_outputs
        self._setup = setup
        self.pipeline = None
        self.model_load_s: Optional[float] = None
        self._cond = threading.Condition()
        self._queue: Deque[Job] = deque()
        self._running: Optional[Job] = None
        self._written: Deque[Job] = deque()
        self._ready = threading.Event()
        self._build_error: Optional[BaseException] = None
        self._stopping = False
        self._thread: Optional[threading.Thread] = None
        self._counter = itertools.count(1)
        self._context = record.run_context(device_target, mode)

    # ---- lifecycle ----------------------------------------------------------------------------
    def start(self, timeout: Optional[float] = None) -> "GenerationService":
        """Start the worker, build the pipeline there, and wait until it is ready. A model that
        cannot be built raises here, before anyone is served."""
        self._thread = threading.Thread(target=self._work, name="svd-generation", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise UsageError(f"the model was not ready after {timeout} s")
        if self._build_error is not None:
            raise self._build_error
        return self

    def close(self, timeout: float = 30.0) -> None:
        with self._cond:
            self._stopping = True
            for job in list(self._queue):
                job._finish(CANCELLED, "the server is shutting down")
            self._queue.clear()
            if self._running is not None:
                self._running._cancel.set()
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def untrained(self) -> bool:
        return bool(getattr(self.pipeline, "untrained", self.params.checkpoint is None))

    # ---- requests -----------------------------------------------------------------------------
    def validate(self, overrides: Dict[str, Any]) -> SVDParams:
        """The parameters a request would run with; ParamError names a bad field."""
        self._ready.wait()
        return self.pipeline.call_params(**overrides)

    def submit(self, request: Request) -> Job:
        """Queue a request after checking its settings (ParamError) and the queue's length
        (QueueFullError). Returns at once."""
        self.validate(request.overrides)
        check_seed(request.seed)
        with self._cond:
            if self._stopping:
                raise QueueFullError("the server is shutting down")
            if len(self._queue) >= self.max_queue:
                raise QueueFullError(f"{len(self._queue)} requests are already waiting (the limit is "
                                     f"{self.max_queue}); try again in a few minutes")
            job = Job(f"{next(self._counter):04d}{secrets.token_hex(3)}", request)
            self._queue.append(job)
            self._cond.notify_all()
        return job

    def position(self, job: Job) -> int:
        """How many jobs run or wait before `job`: 0 when it is running or finished."""
        with self._cond:
            if job.state != QUEUED:
                return 0
            try:
                return self._queue.index(job) + (self._running is not None)
            except ValueError:
                return 0

    def queue_length(self) -> int:
        with self._cond:
            return len(self._queue) + (self._running is not None)

    def cancel(self, job: Job) -> None:
        """A queued job ends at once; a running one at its next sampling step or decoded chunk."""
        with self._cond:
            if job.state == QUEUED and job in self._queue:
                self._queue.remove(job)
                job._finish(CANCELLED, "cancelled before it started")
            elif job.state == RUNNING:
                job._cancel.set()

    def cancel_owner(self, owner: str) -> int:
        """Cancel every unfinished job of one page session; returns how many."""
        with self._cond:
            mine = [j for j in itertools.chain(self._queue, [self._running] if self._running else [])
                    if j.request.owner == owner]
        for job in mine:
            self.cancel(job)
        return len(mine)

    # ---- the worker ---------------------------------------------------------------------------
    def _work(self) -> None:
        try:
            if self._setup is not None:
                self._setup()
            t0 = time.perf_counter()
            self.pipeline = self.pipeline_factory(self.params)
            self.model_load_s = time.perf_counter() - t0
        except BaseException as exc:  # reported by start()
            self._build_error = exc
            return
        finally:
            self._ready.set()
        while True:
            with self._cond:
                while not self._queue and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return
                job = self._queue.popleft()
                job.state, job.started = RUNNING, time.time()
                job.progress.stage = "preparing"
                self._running = job
            try:
                self._run(job)
            except GenerationCancelled:
                job._finish(CANCELLED, "cancelled")
            except Exception as exc:  # a failed job frees the device like a finished one
                job._finish(FAILED, one_line(exc))
            finally:
                with self._cond:
                    self._running = None
                    self._cond.notify_all()

    def _run(self, job: Job) -> None:
        pipe, req = self.pipeline, job.request
        params = pipe.call_params(**req.overrides)
        sizes = pipe.resolve(params)
        steps, chunks = sizes["num_steps"], -(-sizes["num_frames"] // sizes["decode_chunk_size"])
        job.progress.total = steps + chunks

        def on_step(info) -> bool:
            done = info.index + 1 + (steps if info.stage == "decoding" else 0)
            unit = "step" if info.stage == "sampling" else "chunk"
            job.progress.stage, job.progress.done = info.stage, done
            job.progress.detail = f"{info.stage} {unit} {info.index + 1}/{info.total}"
            return not job.cancel_requested

        memory = PeakMemory(self.device_target)
        memory.reset()
        t0 = time.perf_counter()
        result = pipe.generate(req.image, seed=req.seed, callback=on_step, **req.overrides)
        if job.cancel_requested:
            raise GenerationCancelled("cancelled")
        video = np.asarray(result.video)
        if video.ndim != 4 or video.shape[1] != 3:
            raise SVDError(f"the pipeline returned shape {video.shape}, expected (frames, 3, height, width)")
        if not np.isfinite(video).all():
            raise SVDError("NaN or inf in the decoded frames; nothing written")
        job.progress.stage, job.progress.detail = "writing", "writing the video"
        frames = to_uint8(video)
        base = f"web_{datetime.now().strftime('%Y%m%d-%H%M%S')}_{job.id}_seed{req.seed}"
        video_path, sidecar_path = self.output_dir / f"{base}.mp4", self.output_dir / f"{base}.json"
        sidecar = self._new_record(job, params, sizes, frames, result, video_path)
        t_write = time.perf_counter()
        write_video(frames, video_path, "mp4", params.fps)
        try:
            timings = record.timings(result.timings, queued_s=job.started - job.submitted,
                                     write_s=time.perf_counter() - t_write, total_s=time.perf_counter() - t0,
                                     model_load_s=self.model_load_s)
            sidecar = record.complete_record(sidecar, video_path, timings, memory.read())
            write_json(sidecar_path, sidecar)
        except BaseException:
            remove_path(video_path)
            raise
        job.video_path, job.sidecar_path, job.record = video_path, sidecar_path, sidecar
        job.progress.done = job.progress.total
        self._forget_old(job)
        job._finish(DONE)

    def _new_record(self, job: Job, params: SVDParams, sizes: Mapping[str, Any], frames: np.ndarray, result,
                    video_path: Path) -> Dict[str, Any]:
        """The sidecar (svd_ms.record, the batch job's format). The reproduce command names the
        upload as the visitor called it: run with that file, it makes the same video, since the
        page prepares uploads exactly as the command line prepares images."""
        req = job.request
        seed = req.seed if getattr(result, "seed", None) is None else int(result.seed)
        output = {"height": req.height, "width": req.width, "output_format": "mp4"}
        name = req.image_info.get("path") or "<the uploaded image>"
        reproduce = record.reproduce_command(params, [("image", name)],
                                             dict(output, mode=self.mode, device_target=self.device_target,
                                                  seed=seed))
        return record.new_record(
            video_path=video_path, output_format="mp4", frames=frames, fps=params.fps, seed=seed, params=params,
            settings=record.video_settings(params, output), resolved=sizes, input_info=req.image_info,
            untrained=self.untrained, reproduce=reproduce, context=self._context, source="web page")

    def _forget_old(self, job: Job) -> None:
        """Keep the newest `keep_outputs` results on disk, so that a server left running does not
        fill its disk; older files are removed (only those this service wrote)."""
        with self._cond:
            self._written.append(job)
            old = [self._written.popleft() for _ in range(max(0, len(self._written) - self.keep_outputs))]
        for o in old:
            for p in (o.video_path, o.sidecar_path):
                with contextlib.suppress(OSError):
                    p.unlink()
