"""The web page's generation service and upload checks, without a browser: one job at a time, a
FIFO queue with positions, cancel and failure free the device, results written as checked H.264
mp4 + sidecar; uploads checked like the CLI's images. A stand-in pipeline whose steps wait on a
gate makes "while the first job runs" deterministic."""
import json
import os
import subprocess
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT
from svd_ms import media
from svd_ms.app.service import CANCELLED, DONE, FAILED, QUEUED, RUNNING, GenerationService, QueueFullError, Request
from svd_ms.app.uploads import UploadLimits, check_upload, prepare_upload
from svd_ms.errors import GenerationCancelled, InputError, NonFiniteError, ParamError
from svd_ms.params import SVDParams

DEMO_CONFIG = os.path.join(ROOT, "configs", "demo", "tiny_random.yaml")
DEMO_IMAGE = os.path.join(ROOT, "assets", "demo_landscape.png")
WAIT_S = 30


class GatedPipeline:
    """The parts of SVDInferPipeline the service uses. Every sampling step waits for `gate`;
    `fail_next` makes the next run fail like a real non-finite result."""

    def __init__(self, params):
        self.params = params
        self.untrained = True
        self.gate = threading.Event()
        self.gate.set()
        self.fail_next = False
        self.started = []  # seeds, in the order their runs began
        self.calls = []  # the keyword arguments of each generate call
        self.hold_after_clip = None  # close the gate after this clip of a chain
        self.running = 0
        self.max_running = 0
        self.lock = threading.Lock()

    def call_params(self, **overrides):
        return self.params.replace(**overrides)

    def resolve(self, params):
        t = params.num_frames or 3
        return {"num_frames": t, "num_steps": params.num_steps or 2, "decode_chunk_size": params.decode_chunk_size or t}

    def generate(self, image, seed=None, callback=None, clip_callback=None, video=None, **overrides):
        self.calls.append(dict(overrides, video=video, image=image is not None))
        camera = {k: overrides.pop(k) for k in ("elevations_deg", "azimuths_deg", "height", "width") if k in overrides}
        params = self.call_params(**overrides)
        sizes = self.resolve(params)
        with self.lock:
            self.started.append(seed)
            self.running += 1
            self.max_running = max(self.max_running, self.running)
        if video is not None:
            image = np.full((64, 128, 3), 100, np.uint8)  # the stand-in's "first frame" of the clip
        skipped = int(sizes["num_steps"] * (1 - params.strength)) if params.strength else 0
        clips = []
        try:
            for k in range(params.num_clips):
                for i in range(sizes["num_steps"] - skipped):
                    assert self.gate.wait(WAIT_S)
                    if callback(SimpleNamespace(stage="sampling", index=i, total=sizes["num_steps"] - skipped,
                                                clip=k)) is False:
                        raise GenerationCancelled("stopped by the step callback")
                if self.fail_next:
                    self.fail_next = False
                    raise NonFiniteError("non-finite values (NaN/inf) in decoded frames; stopping")
                chunks = -(-sizes["num_frames"] // sizes["decode_chunk_size"])
                for i in range(chunks):
                    if callback(SimpleNamespace(stage="decoding", index=i, total=chunks, clip=k)) is False:
                        raise GenerationCancelled("stopped by the step callback")
                a = np.asarray(image, np.float32).transpose(2, 0, 1) / 255.0
                clips.append(np.stack([np.clip(a + 0.05 * (t + k), 0, 1) for t in range(sizes["num_frames"])]))
                if self.hold_after_clip == k:
                    self.gate.clear()
                if clip_callback is not None:
                    clip_callback(SimpleNamespace(index=k, frames=clips[-1] * 2 - 1))
            video = np.concatenate([clips[0]] + [c[1:] for c in clips[1:]])
            steps = sizes["num_steps"] * params.num_clips
            return SimpleNamespace(video=video, timings={"step_s": [0.01] * steps, "decode_s": 0.0},
                                   camera={k: np.asarray(v) for k, v in camera.items() if k.endswith("_deg")} or None)
        finally:
            with self.lock:
                self.running -= 1


class GatedOrbitPipeline(GatedPipeline):
    """An sv3d_p stand-in: its conditioner takes the image and a camera, not fps and motion."""
    input_keys = ["cond_frames", "cond_frames_without_noise", "cond_aug", "polars_rad", "azimuths_rad"]
    orbit = True


@pytest.fixture
def service(tmp_path):
    made = []
    svc = GenerationService(SVDParams(config=DEMO_CONFIG), lambda p: made.append(GatedPipeline(p)) or made[-1],
                            str(tmp_path / "out"), max_queue=3, keep_outputs=2).start(timeout=WAIT_S)
    yield svc
    svc.pipeline.gate.set()
    svc.close()


def _frame(h=64, w=128):
    return (np.arange(h * w * 3, dtype=np.uint32).reshape(h, w, 3) % 251).astype(np.uint8)


def _until(predicate, what):
    end = time.monotonic() + WAIT_S
    while not predicate():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.01)


def _probe(path):
    """Codec and pixel format of a video, from ffmpeg itself (the binary imageio-ffmpeg ships)."""
    import imageio_ffmpeg
    out = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", str(path)],
                         capture_output=True, text=True).stderr
    return next(line for line in out.splitlines() if "Video:" in line)


def test_second_request_waits_its_turn_then_completes(service):
    pipe = service.pipeline
    pipe.gate.clear()
    first = service.submit(Request(_frame(), seed=1, overrides={"num_steps": 2}))
    _until(lambda: first.state == RUNNING, "the first job to start")
    second = service.submit(Request(_frame(), seed=2))
    third = service.submit(Request(_frame(), seed=3))
    assert (second.state, third.state) == (QUEUED, QUEUED)
    assert (service.position(first), service.position(second), service.position(third)) == (0, 1, 2)
    assert service.queue_length() == 3
    time.sleep(0.2)
    assert pipe.started == [1], "a queued job started while another ran"
    pipe.gate.set()
    for job in (first, second, third):
        assert job.wait(WAIT_S) and job.state == DONE, job.error
    assert pipe.started == [1, 2, 3] and pipe.max_running == 1
    assert first.finished <= second.started and second.finished <= third.started


def test_result_is_a_checked_h264_mp4_with_its_sidecar(service):
    job = service.submit(Request(_frame(), seed=7, overrides={"num_frames": 4, "fps": 8, "num_steps": 2},
                                 image_info={"path": "upload.png"}))
    assert job.wait(WAIT_S) and job.state == DONE, job.error
    assert job.video_path.parent == service.output_dir and job.video_path.suffix == ".mp4"
    assert media.read_video_shape(job.video_path, "mp4") == (4, 64, 128)
    line = _probe(job.video_path)
    print(f"[web] result stream: {line.strip()}")
    assert "h264" in line and "yuv420p" in line
    record = json.loads(job.sidecar_path.read_text())
    assert record == job.record
    assert record["status"] == "done" and record["untrained"] is True and record["seed"] == 7
    assert (record["frames"], record["width"], record["height"], record["fps"]) == (4, 128, 64, 8)
    assert record["pipeline"]["num_steps"] == 2 and record["input"] == {"path": "upload.png"}
    from svd_ms.jobs import file_digest
    assert record["video_sha256"] == file_digest(job.video_path)
    assert "--seed=7" in record["reproduce"] and "--SVD.num_frames=4" in record["reproduce"]
    assert job.progress.done == job.progress.total == 2 + 1  # 2 steps + 1 decoded chunk


def test_cancel_running_job_frees_the_device(service):
    pipe = service.pipeline
    pipe.gate.clear()
    first = service.submit(Request(_frame(), seed=1, owner="alice"))
    _until(lambda: first.state == RUNNING, "the first job to start")
    second = service.submit(Request(_frame(), seed=2, owner="bob"))
    assert service.cancel_owner("alice") == 1
    pipe.gate.set()
    assert first.wait(WAIT_S) and first.state == CANCELLED and first.video_path is None
    assert second.wait(WAIT_S) and second.state == DONE, second.error
    assert sorted(p.name for p in service.output_dir.iterdir()) == sorted([second.video_path.name,
                                                                           second.sidecar_path.name])


def test_cancel_queued_job_ends_at_once(service):
    pipe = service.pipeline
    pipe.gate.clear()
    first = service.submit(Request(_frame(), seed=1, owner="alice"))
    _until(lambda: first.state == RUNNING, "the first job to start")
    queued = service.submit(Request(_frame(), seed=2, owner="bob"))
    service.cancel(queued)
    assert queued.is_final and queued.state == CANCELLED
    assert service.position(queued) == 0 and service.queue_length() == 1
    pipe.gate.set()
    assert first.wait(WAIT_S) and first.state == DONE
    assert pipe.started == [1]


def test_failed_job_reports_one_line_and_frees_the_device(service):
    service.pipeline.fail_next = True
    bad = service.submit(Request(_frame(), seed=1))
    good = service.submit(Request(_frame(), seed=2))
    assert bad.wait(WAIT_S) and bad.state == FAILED
    assert bad.error.startswith("non-finite values") and "\n" not in bad.error
    assert good.wait(WAIT_S) and good.state == DONE
    assert not any(service.output_dir.glob("*seed1*"))


def test_bad_values_and_a_full_queue_are_refused_at_submit(service):
    with pytest.raises(ParamError, match="fps=0") as err:
        service.submit(Request(_frame(), seed=1, overrides={"fps": 0}))
    assert err.value.field == "fps"
    with pytest.raises(ParamError, match="num_steps=0 is out of range"):
        service.submit(Request(_frame(), seed=1, overrides={"num_steps": 0}))
    with pytest.raises(ParamError) as err:
        service.submit(Request(_frame(), seed=2**32))
    assert err.value.field == "seed"
    service.pipeline.gate.clear()
    jobs = [service.submit(Request(_frame(), seed=0))]
    _until(lambda: jobs[0].state == RUNNING, "the first job to start")
    jobs += [service.submit(Request(_frame(), seed=i)) for i in range(1, 4)]  # 1 running + 3 waiting
    with pytest.raises(QueueFullError, match="already waiting"):
        service.submit(Request(_frame(), seed=9))
    service.pipeline.gate.set()
    assert all(j.wait(WAIT_S) and j.state == DONE for j in jobs)


def test_only_the_newest_results_are_kept(service):
    jobs = [service.submit(Request(_frame(), seed=i)) for i in range(3)]
    assert all(j.wait(WAIT_S) and j.state == DONE for j in jobs)
    names = sorted(p.name for p in service.output_dir.iterdir())
    assert names == sorted(p.name for j in jobs[1:] for p in (j.video_path, j.sidecar_path))


def test_a_model_that_cannot_be_built_fails_at_start(tmp_path):
    def broken(params):
        raise ParamError("checkpoint", "checkpoint 'x.ckpt' does not exist")
    with pytest.raises(ParamError, match="does not exist"):
        GenerationService(SVDParams(config=DEMO_CONFIG), broken, str(tmp_path)).start(timeout=WAIT_S)




# ---- one input, one video: the page, the command line and the API agree ----------------------

def test_web_page_cli_and_api_make_the_same_video_and_record(tmp_path, capsys):
    """The same file, settings and seed through the command line (image_to_video.main), the Python
    API (`generate(path)`) and the web service (an upload checked and prepared by the page's
    functions): the same video from one real tiny model, and the CLI's and the page's sidecars
    record the same settings. Bound: the engine's own run-to-run spread on this CPU (repeated calls
    of one pipeline in one process drift by ~3e-5 after the first runs, which can flip an 8-bit
    rounding), far below what another preparation, seed or setting makes."""
    import importlib.util

    from conftest import TINY_CONFIG, TINY_IMAGE, TINY_WEIGHTS
    from svd_ms.media import to_uint8
    from svd_ms.pipeline import SVDInferPipeline

    src = tmp_path / "upload" / "pic.png"
    src.parent.mkdir()
    with Image.open(TINY_IMAGE) as im:
        im.convert("RGB").crop((64, 64, 192, 128)).save(src)  # 128x64: cheap
    params = SVDParams(config=TINY_CONFIG, checkpoint=TINY_WEIGHTS, num_frames=2, num_steps=2, sampler="euler",
                       sampler_params={"s_churn": 0.5})
    pipe = SVDInferPipeline(params=params)
    videos = {}

    class Recording:
        """The shared pipeline, keeping the video each caller got."""
        def __init__(self, name):
            self.name = name

        def __getattr__(self, attr):
            return getattr(pipe, attr)

        def generate(self, *args, **kwargs):
            result = pipe.generate(*args, **kwargs)
            videos[self.name] = np.asarray(result.video)
            return result

    def factory(name):
        def make(p):
            assert p == params, "the caller built other settings than the test's"
            return Recording(name)
        return make

    spec = importlib.util.spec_from_file_location("image_to_video", os.path.join(ROOT, "image_to_video.py"))
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    rc = cli.main(["--SVD.config", TINY_CONFIG, "--SVD.checkpoint", TINY_WEIGHTS, "--SVD.num_frames=2",
                   "--SVD.num_steps=2", "--SVD.sampler=euler", '--SVD.sampler_params={"s_churn": 0.5}',
                   "--device_target=CPU", "--mode=1", "--progress=false", "--seed=21", "--output_dir",
                   str(tmp_path / "cli"), "--image", str(src)], pipeline_factory=factory("cli"))
    assert rc == 0, capsys.readouterr().err
    cli_side = json.loads((tmp_path / "cli" / "pic_seed21.json").read_text())

    videos["api"] = np.asarray(pipe.generate(str(src), seed=21).video)

    svc = GenerationService(params, factory("web"), str(tmp_path / "web"), device_target="CPU", mode=1)
    svc.start(timeout=WAIT_S)
    try:
        img, info = check_upload(str(src), UploadLimits())
        array, info, _ = prepare_upload(img, info, None, None, "pic.png")
        job = svc.submit(Request(array, seed=21, image_info=info))
        assert job.wait(300) and job.state == DONE, job.error
    finally:
        svc.close()
    web_side = job.record

    assert sorted(videos) == ["api", "cli", "web"] and videos["cli"].shape == (2, 3, 64, 128)
    for name in ("api", "web"):
        worst = float(np.abs(videos[name] - videos["cli"]).max())
        worst8 = int(np.abs(to_uint8(videos[name]).astype(int) - to_uint8(videos["cli"]).astype(int)).max())
        print(f"[web] {name} vs command line: max abs {worst:.2e} (bound 1e-3), 8-bit {worst8} (bound 1)")
        assert worst <= 1e-3 and worst8 <= 1
    from svd_ms import record
    assert record.differing_settings(cli_side["settings"], web_side["settings"]) == []
    assert web_side["settings"]["sampler_params"] == {"s_churn": 0.5}
    assert web_side["video_sha256"] == record.file_digest(job.video_path)
    assert web_side["seed"] == cli_side["seed"] == 21 and web_side["resolved"] == cli_side["resolved"]
    assert "--image=pic.png" in web_side["reproduce"] and "--seed=21" in web_side["reproduce"]


# ---- every kind of run, chained clips, history, LoRA ---------------------------------------

def test_video_to_video_and_chains_reach_the_pipeline_and_their_sidecars(service, tmp_path):
    pipe = service.pipeline
    assert service.capabilities.kinds() == ["image_to_video", "video_to_video"]
    clip = str(tmp_path / "clip.mp4")
    v2v = service.submit(Request(None, seed=3, overrides={"strength": 0.5, "num_steps": 4}, kind="video_to_video",
                                 video=clip, video_info={"path": "clip.mp4"}))
    assert v2v.wait(WAIT_S) and v2v.state == DONE, v2v.error
    assert pipe.calls[-1]["video"] == clip and not pipe.calls[-1]["image"]
    assert v2v.progress.done == v2v.progress.total == 4 + 1  # the 2 skipped steps count as done
    rec = v2v.record
    assert rec["kind"] == "video_to_video" and rec["input"]["path"] == "clip.mp4"
    assert "--video=clip.mp4" in rec["reproduce"] and "--SVD.strength=0.5" in rec["reproduce"]

    pipe.gate.clear()
    chain = service.submit(Request(_frame(), seed=4, overrides={"num_clips": 3, "num_steps": 2}))
    _until(lambda: chain.state == RUNNING, "the chain to start")
    assert chain.clips == []
    pipe.gate.set()
    assert chain.wait(WAIT_S) and chain.state == DONE, chain.error
    assert [p.name.rsplit("_", 1)[-1] for p in chain.clips] == ["clip1.mp4", "clip2.mp4", "clip3.mp4"]
    assert all(media.read_video_shape(p, "mp4") == (3, 64, 128) for p in chain.clips)
    assert chain.progress.total == 3 * (2 + 1) and chain.record["clips"] == 3 and chain.record["frames"] == 7
    assert "--SVD.num_clips=3" in chain.record["reproduce"]


def test_a_cancelled_chain_leaves_no_clip_files(service):
    pipe = service.pipeline
    pipe.gate.clear()
    chain = service.submit(Request(_frame(), seed=4, overrides={"num_clips": 3, "num_steps": 2}))
    _until(lambda: chain.state == RUNNING, "the chain to start")
    pipe.hold_after_clip = 0
    pipe.gate.set()
    _until(lambda: len(chain.clips) == 1, "the first clip")  # clip 2 now waits at its first step
    assert chain.clips[0].is_file()
    service.cancel(chain)
    pipe.gate.set()
    assert chain.wait(WAIT_S) and chain.state == CANCELLED
    assert list(service.output_dir.iterdir()) == []


def test_requests_the_model_cannot_do_are_refused_by_name(service):
    cases = [(Request(_frame(), seed=1, kind="orbit"), "kind", "does not do orbit"),
             (Request(_frame(), seed=1, kind="painting"), "kind", "unknown kind"),
             (Request(_frame(), seed=1, camera={"elevations_deg": [10.0]}), "camera", "no camera path"),
             (Request(None, seed=1, kind="video_to_video"), "video", "no video"),
             (Request(_frame(), seed=1, lora=[("a.safetensors", 1.0)]), "lora", "no LoRA folder")]
    for request, field_name, words in cases:
        with pytest.raises(ParamError, match=words) as err:
            service.submit(request)
        assert err.value.field == field_name


def test_orbit_service_records_its_camera_and_refuses_image_to_video(tmp_path):
    svc = GenerationService(SVDParams(config=DEMO_CONFIG), GatedOrbitPipeline, str(tmp_path / "out")).start(WAIT_S)
    try:
        caps = svc.capabilities
        assert (caps.kinds(), caps.camera, caps.chained) == (["orbit"], True, False)
        with pytest.raises(ParamError, match="does not do image to video"):
            svc.submit(Request(_frame(), seed=1))
        camera = {"elevations_deg": [5.0, 10.0, 15.0], "azimuths_deg": [120.0, 240.0, 0.0]}
        with pytest.raises(InputError, match="elevations_deg: give one number or 4"):  # 4 frames, 3 views: at once
            svc.submit(Request(_frame(64, 64), seed=2, kind="orbit", camera=camera, overrides={"num_frames": 4}))
        job = svc.submit(Request(_frame(64, 64), seed=2, kind="orbit", camera=camera, keep_background=True,
                                 height=64, width=64, image_info={"path": "object.png"}))
        assert job.wait(WAIT_S) and job.state == DONE, job.error
        assert svc.pipeline.calls[-1]["elevations_deg"] == camera["elevations_deg"]
        rec = job.record
        assert rec["settings"]["elevations_deg"] == camera["elevations_deg"] and rec["settings"]["keep_background"]
        assert rec["camera"]["azimuths_deg"] == camera["azimuths_deg"]
        assert "--keep_background=true" in rec["reproduce"] and "--elevations_deg=[5.0, 10.0, 15.0]" in \
            rec["reproduce"].replace("'", "")
    finally:
        svc.close()


def test_history_is_each_sessions_own_newest_first(service):
    jobs = [service.submit(Request(_frame(), seed=i, owner=owner)) for i, owner in enumerate(("ann", "bob", "ann"))]
    assert all(j.wait(WAIT_S) and j.state == DONE for j in jobs)
    assert service.history("ann") == [jobs[2]]  # keep_outputs=2: the oldest is gone from disk and history
    assert service.history() == [jobs[2], jobs[1]]
    assert jobs[2].thumbnail.dtype == np.uint8 and jobs[2].thumbnail.shape[2] == 3


def test_lora_switching_between_requests_gives_the_command_lines_video_without_a_rebuild(tmp_path, capsys):
    """One tiny real model served with a LoRA folder; requests with no adapter, adapter a, a and b
    at other scales, then none again. The a+b video equals the one its sidecar's reproduce command
    makes on the command line (a model built with --SVD.lora, merged at load), and the served UNet
    switched to a+b equals that model's bit for bit; the last video equals the first (the base
    weights came back); the model was built once. Video bound: one 8-bit level and 1e-3 (the
    engine's run-to-run spread on this CPU, see the test above: equal weights, equal seeds); the
    adapters change the video by far more (checked)."""
    import importlib.util
    import shlex

    from conftest import TINY_CONFIG, TINY_IMAGE, TINY_WEIGHTS
    from lora_adapters import write_adapter
    from svd_ms.pipeline import SVDInferPipeline

    params = SVDParams(config=TINY_CONFIG, checkpoint=TINY_WEIGHTS, num_frames=2, num_steps=2)
    built, videos = [], []

    class Recording:
        def __init__(self, pipe):
            self.pipe = pipe

        def __getattr__(self, attr):
            return getattr(self.pipe, attr)

        def generate(self, *args, **kwargs):
            result = self.pipe.generate(*args, **kwargs)
            videos.append(np.asarray(result.video))
            return result

    def factory(p):
        built.append(SVDInferPipeline(params=p))
        return Recording(built[-1])

    folder = tmp_path / "adapters"
    folder.mkdir()
    svc = GenerationService(params, factory, str(tmp_path / "web"), device_target="CPU", mode=1,
                            lora_dir=str(folder))
    svc.start(timeout=300)
    try:
        engine = svc.pipeline.engine
        write_adapter(folder / "a.safetensors", engine, seed=1, size=0.3)
        write_adapter(folder / "b.safetensors", engine, seed=2, every=2, size=0.3)
        src = tmp_path / "pic.png"
        with Image.open(TINY_IMAGE) as im:
            im.convert("RGB").crop((64, 64, 192, 128)).save(src)
        image = np.asarray(Image.open(src).convert("RGB"))
        jobs = []
        for lora in ([], [("a.safetensors", 1.0)], [("a.safetensors", 0.5), ("b.safetensors", -1.0)], []):
            job = svc.submit(Request(image, seed=5, lora=lora, image_info={"path": "pic.png"}))
            assert job.wait(300) and job.state == DONE, job.error
            jobs.append(job)
        with pytest.raises(ParamError, match="not one of the files") as err:
            svc.submit(Request(image, seed=5, lora=[("../adapters/a.safetensors", 1.0)]))
        assert err.value.field == "lora"
        assert len(built) == 1 and svc.pipeline.engine is engine, "the model was rebuilt"
    finally:
        svc.close()

    args = shlex.split(jobs[2].record["reproduce"])[2:]
    lora_flag = next(a for a in args if a.startswith("--SVD.lora="))
    assert json.loads(lora_flag.split("=", 1)[1]) == [f"{folder / 'a.safetensors'}:0.5",
                                                      f"{folder / 'b.safetensors'}:-1"]
    args = [a if not a.startswith("--image=") else f"--image={src}" for a in args]
    spec = importlib.util.spec_from_file_location("image_to_video", os.path.join(ROOT, "image_to_video.py"))
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    rc = cli.main(args + ["--progress=false", f"--output_dir={tmp_path / 'cli'}"], pipeline_factory=factory)
    assert rc == 0, capsys.readouterr().err
    assert len(built) == 2 and built[1].weights_info.get("lora"), "the command line did not merge at load"
    cli_video = videos[-1]
    # The weights themselves: the served model switched to a+b again equals the CLI's, bit for bit.
    svc.use_lora([("a.safetensors", 0.5), ("b.safetensors", -1.0)])
    served, loaded = (dict(p.engine.model.diffusion_model.parameters_and_names()) for p in built)
    unequal = [n for n in served if not np.array_equal(served[n].asnumpy(), loaded[n].asnumpy())]
    print(f"[web lora] UNet tensors differing from the command line's a+b model: {len(unequal)} of {len(served)} "
          "(bound 0)")
    assert unequal == []

    def worst(a, b):
        a8, b8 = media.to_uint8(a).astype(int), media.to_uint8(b).astype(int)
        return float(np.abs(a - b).max()), int(np.abs(a8 - b8).max())

    for label, (a, b), bound in (("a+b: page vs command line", (videos[2], cli_video), (1e-3, 1)),
                                 ("none after a+b vs none first", (videos[3], videos[0]), (1e-3, 1))):
        diff, diff8 = worst(a, b)
        print(f"[web lora] {label}: max abs {diff:.2e} (bound {bound[0]}), 8-bit {diff8} (bound {bound[1]})")
        assert diff <= bound[0] and diff8 <= bound[1]
    for i in (1, 2):
        moved = worst(videos[i], videos[0])[0]
        print(f"[web lora] request {i} vs no adapter: max abs {moved:.2e} (must exceed 1e-2)")
        assert moved > 1e-2
