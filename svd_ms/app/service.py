"""The generation service behind the web page: one model, one device, one generation at a time.

Requests wait in a first-in-first-out queue and can read their position; one worker thread owns
the pipeline (it is built there once, at start, and kept) and runs the jobs in turn. A job is
cancelled through the pipeline's step callback returning False; a cancelled or failed job ends
like a finished one, so the next job starts. Each finished job leaves an H.264 mp4 and its JSON
sidecar in the service's own output directory, and nothing else anywhere. Knows nothing of
Gradio.
"""
import itertools
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Deque, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .. import record, sv3d
from ..errors import GenerationCancelled, ParamError, SVDError, UsageError, one_line
from ..jobs.settings import check_output_dir
from ..params import SVDParams
from ..seeds import check_seed
from .capabilities import Capabilities, LoRAFolder, capabilities_of
from .runs import IMAGE_TO_VIDEO, KINDS, ORBIT, VIDEO_TO_VIDEO, remove_files, run_job

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
FINAL_STATES = (DONE, FAILED, CANCELLED)


class QueueFullError(SVDError):
    pass


@dataclass
class Request:
    """One generation: the conditioning frame (uint8 HxWx3, sides multiples of 64; an orbit's
    cut-out already recentred; None for video to video, conditioned on the clip's first frame), its
    seed and the per-call sampling settings (`SVDParams` fields, `num_clips` for chained clips,
    `strength` for video to video). `height`/`width`: the size the visitor asked for, as the
    command line's --height/--width (None: the input's own size), recorded so that the sidecar's
    reproduce command prepares the upload the same way."""
    image: Optional[np.ndarray]
    seed: int
    overrides: Dict[str, Any] = field(default_factory=dict)
    image_info: Dict[str, Any] = field(default_factory=dict)
    owner: Optional[str] = None  # the page session that asked, so that its cancel button finds it
    height: Optional[int] = None
    width: Optional[int] = None
    kind: str = IMAGE_TO_VIDEO
    video: Optional[str] = None  # video to video: the uploaded clip (a file the page received)
    video_info: Dict[str, Any] = field(default_factory=dict)
    camera: Optional[Dict[str, Any]] = None  # orbit: elevations_deg, azimuths_deg (sv3d_p)
    keep_background: bool = False  # orbit: recorded; the cut-out was made by the page
    lora: Sequence[Tuple[str, float]] = ()  # adapter file names in --lora_dir, with their scales


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
        self.clips: List[Path] = []  # the finished clips of a chain, as they arrive
        self.num_clips = 1
        self.thumbnail: Optional[np.ndarray] = None
        self.preview: Optional[np.ndarray] = None  # the latest live preview (uint8 HxWx3)
        self.preview_count = 0
        self.preview_fn: Optional[Callable[[Any], Optional[np.ndarray]]] = None
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

    def set_preview(self, image: Optional[np.ndarray]) -> None:
        if image is not None:
            self.preview, self.preview_count = image, self.preview_count + 1

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
                 setup: Optional[Callable[[], None]] = None, lora_dir: Optional[str] = None):
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
        self.lora_folder = LoRAFolder(lora_dir) if lora_dir else None
        self._lora_switch = None
        self.capabilities: Optional[Capabilities] = None
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
        self.run_context = record.run_context(device_target, mode)

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

    def check_request(self, request: Request) -> None:
        """What the model must support for this request (ParamError naming it)."""
        caps = self.capabilities
        if request.kind not in KINDS:
            raise ParamError("kind", f"unknown kind of run {request.kind!r}; one of {', '.join(KINDS)}")
        if request.kind not in caps.kinds():
            raise ParamError("kind", f"this server's model does not do {request.kind.replace('_', ' ')}")
        if request.overrides.get("num_clips", 1) not in (None, 1) and (request.kind != IMAGE_TO_VIDEO
                                                                       or not caps.chained):
            raise ParamError("num_clips", "chained clips start from an image on an SVD model; this run makes one clip")
        if request.kind == VIDEO_TO_VIDEO and not request.video:
            raise ParamError("video", "no video: upload a clip")
        if request.kind != VIDEO_TO_VIDEO and request.image is None:
            raise ParamError("image", "no image: upload one")
        if request.camera and not (request.kind == ORBIT and caps.camera):
            raise ParamError("camera", "this model takes no camera path (an sv3d_p model does)")
        if request.camera:  # one view per frame, checked before the request waits in the queue
            frames = self.pipeline.resolve(self.validate(request.overrides))["num_frames"]
            sv3d.camera_path(frames, request.camera.get("elevations_deg"), request.camera.get("azimuths_deg"))
        if request.lora:
            if self.lora_folder is None:
                raise ParamError("lora", "this server has no LoRA folder (start it with --lora_dir)")
            request.lora = self.lora_folder.check(request.lora)

    def lora_path(self, name: str) -> str:
        return self.lora_folder.path_of(name)

    def use_lora(self, picks: Sequence[Tuple[str, float]]) -> None:
        """Merge exactly these adapters into the served model (worker thread only); nothing to do
        on a server without --lora_dir."""
        if self.lora_folder is None:
            return
        if self._lora_switch is None:
            from ..lora.switch import LoRASwitch
            self._lora_switch = LoRASwitch(self.pipeline.engine)
        self._lora_switch.use([(self.lora_path(name), scale) for name, scale in picks])

    def history(self, owner: Optional[str] = None) -> List[Job]:
        """This server's finished results still on disk, newest first; `owner` keeps one page
        session's only."""
        with self._cond:
            done = list(self._written)
        return [j for j in reversed(done) if owner is None or j.request.owner == owner]

    def submit(self, request: Request) -> Job:
        """Queue a request after checking its settings (ParamError) and the queue's length
        (QueueFullError). Returns at once."""
        self.validate(request.overrides)
        check_seed(request.seed)
        self.check_request(request)
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
            self.capabilities = capabilities_of(self.pipeline, self.params.sampler,
                                                self.lora_folder and str(self.lora_folder.folder))
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
                run_job(self, job)
                self._forget_old(job)
                job._finish(DONE)
            except GenerationCancelled:
                job._finish(CANCELLED, "cancelled")
            except Exception as exc:  # a failed job frees the device like a finished one
                job._finish(FAILED, one_line(exc))
            finally:
                with self._cond:
                    self._running = None
                    self._cond.notify_all()

    def _forget_old(self, job: Job) -> None:
        """Keep the newest `keep_outputs` results on disk, so that a server left running does not
        fill its disk; older files are removed (only those this service wrote)."""
        with self._cond:
            self._written.append(job)
            old = [self._written.popleft() for _ in range(max(0, len(self._written) - self.keep_outputs))]
        for o in old:
            remove_files([o.video_path, o.sidecar_path, *o.clips])
