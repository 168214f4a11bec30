"""The shard loop of a batch job: this rank's inputs, one after another, through one pipeline.

Every input at position i of the sorted input list gets seed `offset_seed(base_seed, i)` and the
outputs `<stem>_seed<seed>.<ext>` and `<stem>_seed<seed>.json` (the sidecar, svd_ms.record). The
sidecar is written first as 'writing', then the video, then the sidecar again, complete, so that a
run killed in between is recognised as ours and redone (jobs.resume). One input's failure is
reported and the others still run.
"""
import contextlib
import os
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from .. import preparation, record, sv3d
from ..errors import ImageError, SVDError, UsageError, one_line
from ..media import probe_video, remove_path, to_uint8, write_json, write_video
from ..params import SVDParams
from ..runtime import Cluster, PeakMemory, format_bytes
from ..seeds import offset_seed
from ..diffusers_config import model_config_for
from ..util import load_config
from . import ranks
from .console import debug_enabled, log, report_error, warn
from .records import JobRecords
from .resume import ClipStore, clean_temporaries, previous_outputs
from .settings import EXIT_FAILED, EXIT_OK, EXIT_SETUP, JobSettings, check_camera, check_model_flags, \
    check_output_dir, output_paths, resolve_inputs


def prepare_input(path: str, settings: JobSettings, orbit: bool, size: Optional[Tuple[int, int]] = None):
    """One input image as the model takes it: (uint8 HxWx3, info, warnings), by the one rule of
    svd_ms.preparation (the API's and the web page's too). `size`, (height, width), overrides the
    flags for the conditioning image of video-to-video."""
    height, width = size or (settings.height, settings.width)
    prepared = preparation.prepare_input(path, orbit=orbit, height=height, width=width,
                                         keep_background=settings.keep_background,
                                         image_frame_ratio=settings.image_frame_ratio)
    return prepared.pixels, prepared.info, prepared.warnings


class BatchJob:
    """Runs `settings.images` (or `settings.videos`) through a pipeline made by
    `pipeline_factory(params)` on this rank.

    The pipeline needs `generate(image, seed=..., progress=...) -> result` with `.video`
    (T, 3, H, W) in [0, 1], `.timings` and `.seed`; `resolve(params)` (the concrete num_frames,
    num_steps, decode_chunk_size, noise_aug_strength) and `.untrained`; for video inputs a
    `video=` argument, for chains `finished_clips=` and `clip_callback=`."""

    def __init__(self, settings: JobSettings, params: SVDParams, pipeline_factory: Callable[[SVDParams], Any],
                 cluster: Optional[Cluster] = None, device_target: str = "CPU"):
        self.settings = settings
        self.params = params
        self.pipeline_factory = pipeline_factory
        self.cluster = cluster or Cluster()
        self.device_target = device_target
        self.tag = self.cluster.tag
        # no --SVD.config: the model config comes from the diffusers folder's own JSON files
        model_config = load_config(model_config_for(params.config, params.checkpoint, log=lambda line: None),
                                   require_model=True).model
        self.input_keys = sv3d.conditioner_input_keys(model_config)
        self.orbit = sv3d.is_orbit_model(self.input_keys)
        self.records = JobRecords(params, settings, self.orbit, device_target)
        self.context: Dict[str, Any] = {}

    @property
    def kind(self) -> str:
        return self.settings.kind

    def video_settings(self) -> Dict[str, Any]:
        return self.records.video_settings()

    # ---- the job ----------------------------------------------------------------------------
    def run(self) -> int:
        t_job = time.perf_counter()
        s, cluster = self.settings, self.cluster
        out_dir, inputs, problems, setup_error = self._setup()
        # In a cluster the local verdicts are shared first, so that every rank stops together.
        job_id, base_seed = ranks.agree(cluster, setup_error, s.seed, inputs, self.kind)
        log(f"{self.tag}seed: {base_seed}" + (" (random)" if s.seed is None else "")
            + f"; {len(inputs)} {self.kind}(s); device {self.device_target}, mode {s.mode} "
            f"({'graph' if s.mode == 0 else 'PyNative'}{', the default for this device' if s.mode_chosen else ''})")
        state = ranks.RankState(out_dir, cluster, job_id)
        self.context = dict(record.run_context(self.device_target, s.mode))
        try:
            if cluster.is_main:
                for spec, reason in problems:
                    report_error(f"--{self.kind} {reason}")
                    state.add("failed", {"image": spec, "reason": reason, "rank": 0})
            mine = [(i, p) for i, p in enumerate(inputs) if i % cluster.world_size == cluster.rank]
            state.data["assigned"] = len(mine)
            code = self._run_shard(mine, base_seed, out_dir, state)
        finally:
            state.data["timings"]["total_s"] = time.perf_counter() - t_job
            state.finish(keep_beating=cluster.is_main)

        if not cluster.is_main:
            # Leave together with rank 0: MindSpore's cluster does not expect workers to exit while
            # others still compute (the scheduler may then declare the busy ones lost).
            ranks.wait_for_summary(out_dir, job_id, s.dist_timeout, self.tag)
            return EXIT_FAILED if state.data["failed"] else code
        summary = dict(job_id=job_id, base_seed=base_seed, inputs=inputs, output_format=s.output_format,
                       world_size=cluster.world_size, code=code)
        if not cluster.distributed:
            return ranks.write_summary(out_dir, [state.data], **summary)
        try:
            return ranks.write_summary(out_dir, ranks.gather_rank_files(out_dir, job_id, cluster.world_size,
                                                                        s.dist_timeout), **summary)
        finally:
            state.end_heartbeat()
            ranks.remove_rank_files(out_dir, cluster.world_size)

    def _setup(self) -> Tuple[Path, List[str], List[Tuple[str, str]], Optional[str]]:
        """(output folder, inputs, input problems, setup error or None) of this rank."""
        s, cluster = self.settings, self.cluster
        out_dir, inputs, problems = Path(s.output_dir), [], []
        try:
            s.validate()
            check_model_flags(s, self.params, self.orbit)
            out_dir = check_output_dir(s.output_dir, cluster.rank)
            inputs, problems, self.records.condition_image = resolve_inputs(s, self.params)
        except UsageError as exc:
            return out_dir, [], [], str(exc)
        if cluster.is_main:
            for name in clean_temporaries(out_dir):
                log(f"{self.tag}removed {name!r}, left by an interrupted run")
            if cluster.distributed:
                ranks.remove_rank_files(out_dir)  # stale files from an earlier job
        return out_dir, inputs, problems, None

    # ---- this rank's share ------------------------------------------------------------------
    def _pending(self, mine, base_seed: int, out_dir: Path, state: ranks.RankState) -> List[Dict[str, Any]]:
        """The inputs left to make: finished ones are skipped, conflicts and unreadable inputs failed."""
        s, pending, settings = self.settings, [], self.records.video_settings()
        for index, path in mine:
            seed = offset_seed(base_seed, index)
            video, sidecar = output_paths(out_dir, path, seed, s.output_format)
            entry = {"image": path, "index": index, "seed": seed, "base_seed": base_seed, "output": str(video),
                     "sidecar": str(sidecar), "rank": self.cluster.rank}
            verdict, reason = previous_outputs(video, sidecar, settings, s.overwrite, s.output_format)
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
                else:
                    for w in prepare_input(path, s, self.orbit)[2]:
                        warn(w)
            except ImageError as exc:
                state.fail(entry, str(exc))
                continue
            # Only the entry is kept: every image is checked before the model is built, and decoded
            # again when its turn comes, so a folder of thousands is never held in memory at once.
            entry["redo"] = verdict == "redo"
            pending.append(entry)
        return pending

    def _run_shard(self, mine, base_seed: int, out_dir: Path, state: ranks.RankState) -> int:
        pending = self._pending(mine, base_seed, out_dir, state)
        if not pending:
            return EXIT_OK
        untrained = self.params.checkpoint is None
        if untrained:
            warn("UNTRAINED MODEL: --SVD.checkpoint is not set, so the weights are random. The videos only show "
                 "the pipeline working from image to file; they are not real results.")
        t0 = time.perf_counter()
        try:
            pipe = self.pipeline_factory(self.params)
            # The model's defaults come from the pipeline, the one place that resolves them.
            resolved = pipe.resolve(self.params)
            check_camera(self.input_keys, resolved["num_frames"], self.settings)
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
            self._one_input(pipe, resolved, entry, state, memory, model_load_s, untrained)
        return EXIT_OK

    def _generate(self, pipe, resolved, entry):
        """(result, uint8 frames, input info, clip store or None, load seconds) of one input."""
        s, path, seed = self.settings, entry["image"], entry["seed"]
        t0 = time.perf_counter()
        extra: Dict[str, Any] = {}
        if sv3d.takes_camera(self.input_keys):
            extra.update(elevations_deg=s.elevations_deg, azimuths_deg=s.azimuths_deg)
        if self.kind == "video":
            frames_in, info, _ = preparation.load_video(path, resolved["num_frames"], s.height, s.width)
            image = frames_in[0]
            if self.records.condition_image:
                image, info["condition_image"], _ = prepare_input(self.records.condition_image, s, False,
                                                                  size=frames_in.shape[1:3])
            extra["video"] = frames_in
        else:
            image, info, _ = prepare_input(path, s, self.orbit)
        store = None
        if self.params.num_clips > 1:
            store = ClipStore(Path(entry["output"]), {"settings": self.records.video_settings(), "seed": seed,
                                                      "input_sha256": record.file_digest(Path(path))})
            finished = store.load()
            if finished:
                log(f"{self.tag}resuming {path!r} at clip {len(finished) + 1}/{self.params.num_clips} "
                    f"({len(finished)} finished clip(s) kept from an interrupted run)")
            extra.update(finished_clips=finished, clip_callback=store.save)
        t_load = time.perf_counter() - t0
        result = pipe.generate(image, seed=seed, progress=s.progress, **extra)
        video = np.asarray(result.video)
        if video.ndim != 4 or video.shape[1] != 3:
            raise ImageError(f"{path!r}: the pipeline returned shape {video.shape}, expected (T,3,H,W)")
        if not np.isfinite(video).all():
            raise ImageError(f"{path!r}: NaN or inf in the decoded frames (stage: decode output, seed {seed}); "
                             f"nothing written")
        return result, to_uint8(video), info, store, t_load

    def _one_input(self, pipe, resolved, entry, state: ranks.RankState, memory: PeakMemory, model_load_s: float,
                   untrained: bool):
        path = entry["image"]
        video_path, sidecar_path = Path(entry["output"]), Path(entry["sidecar"])
        memory.reset()
        t_start = time.perf_counter()
        try:
            result, frames, info, store, t_load = self._generate(pipe, resolved, entry)
            sidecar = self.records.new(entry, frames, info, result, untrained, resolved, self.context,
                                       self.cluster.rank, self.cluster.world_size)
            # The sidecar goes first as "writing", so that a run killed before the final record is
            # recognised as ours and redone.
            write_json(sidecar_path, sidecar)
            t_write = time.perf_counter()
            write_video(frames, video_path, self.settings.output_format, sidecar["fps"],
                        overwrite=entry.get("redo", False))
            t_write = time.perf_counter() - t_write
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # one input's failure must not stop the others
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
        timings = record.timings(result.timings, load_image_s=t_load, write_s=t_write,
                                 total_s=time.perf_counter() - t_start, model_load_s=model_load_s)
        peak = memory.read()
        try:
            write_json(sidecar_path, record.complete_record(sidecar, video_path, timings, peak))
        except OSError as exc:
            remove_path(video_path)
            with contextlib.suppress(OSError):
                sidecar_path.unlink()
            state.fail(entry, f"{path!r}: {exc}; video removed")
            return
        if store is not None:
            store.remove()  # the video and its complete record exist: the clips are not needed any more
        report_done(self.tag, entry, video_path, timings, peak, untrained, state)


def report_done(tag: str, entry, video_path: Path, timings, peak, untrained: bool, state: ranks.RankState):
    """Record one finished input in this rank's results and print its one-line report."""
    entry["timings"] = {k: v for k, v in timings.items() if k != "step_s"}
    entry["memory"] = peak
    entry.pop("redo", None)
    state.add("done", entry)
    steps = timings["step_s"]
    per_step = f"{timings['mean_step_s']:.2f} s/step" if steps else "s/step n/a"
    comp, dec = timings["compile_s"], timings["decode_s"]
    log(f"{tag}done {video_path.name!r}: {len(steps)} steps, {per_step}, "
        f"decode {dec if dec is None else f'{dec:.2f}'} s, compile {comp if comp is None else f'{comp:.2f}'} s, "
        f"total {timings['total_s']:.1f} s, peak host mem {format_bytes(peak['peak_host_bytes'])}"
        + (f", peak device mem {format_bytes(peak['peak_device_bytes'])}"
           if peak["peak_device_bytes"] is not None else "")
        + (" [UNTRAINED]" if untrained else ""))
