"""The web page's generation service and upload checks, without a browser: one job at a time, a
FIFO queue with positions, cancel and failure free the device, results written as checked H.264
mp4 + sidecar; uploads checked like the CLI's images. A stand-in pipeline whose steps wait on a
gate makes "while the first job runs" deterministic."""
import json
import os
import struct
import subprocess
import sys
import threading
import time
import zlib
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT
from svd_ms import media, preparation
from svd_ms.app.service import CANCELLED, DONE, FAILED, QUEUED, RUNNING, GenerationService, QueueFullError, Request
from svd_ms.app.uploads import UploadLimits, check_upload, prepare_upload
from svd_ms.errors import GenerationCancelled, ImageError, NonFiniteError, ParamError
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
        self.running = 0
        self.max_running = 0
        self.lock = threading.Lock()

    def call_params(self, **overrides):
        return self.params.replace(**overrides)

    def resolve(self, params):
        t = params.num_frames or 3
        return {"num_frames": t, "num_steps": params.num_steps or 2, "decode_chunk_size": params.decode_chunk_size or t}

    def generate(self, image, seed=None, callback=None, **overrides):
        sizes = self.resolve(self.call_params(**overrides))
        with self.lock:
            self.started.append(seed)
            self.running += 1
            self.max_running = max(self.max_running, self.running)
        try:
            for i in range(sizes["num_steps"]):
                assert self.gate.wait(WAIT_S)
                if callback(SimpleNamespace(stage="sampling", index=i, total=sizes["num_steps"])) is False:
                    raise GenerationCancelled("stopped by the step callback")
            if self.fail_next:
                self.fail_next = False
                raise NonFiniteError("non-finite values (NaN/inf) in decoded frames; stopping")
            chunks = -(-sizes["num_frames"] // sizes["decode_chunk_size"])
            for i in range(chunks):
                if callback(SimpleNamespace(stage="decoding", index=i, total=chunks)) is False:
                    raise GenerationCancelled("stopped by the step callback")
            a = np.asarray(image, np.float32).transpose(2, 0, 1) / 255.0
            video = np.stack([np.clip(a + 0.05 * t, 0, 1) for t in range(sizes["num_frames"])])
            return SimpleNamespace(video=video, timings={"step_s": [0.01] * sizes["num_steps"], "decode_s": 0.0})
        finally:
            with self.lock:
                self.running -= 1


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


# ---- uploads --------------------------------------------------------------------------------

def test_text_file_named_png_is_refused_by_its_own_name(tmp_path):
    up = tmp_path / "gradio-upload-dir" / "holiday.png"
    up.parent.mkdir()
    up.write_text("this is not an image\n")
    with pytest.raises(ImageError) as err:
        check_upload(str(up), UploadLimits())
    print(f"[web] text file named .png: {err.value}")
    assert "'holiday.png'" in str(err.value) and "not an image" in str(err.value)
    assert str(up.parent) not in str(err.value)  # no server path in what the visitor reads


def _png_header_only(width, height):
    """A PNG that claims width x height: what a decompression bomb shows before it unpacks."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + \
        chunk(b"IEND", b"")


def test_uploads_are_limited_in_pixels_and_bytes(tmp_path):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_header_only(5000, 5000))
    with pytest.raises(ImageError, match="'bomb.png': 5000x5000 has more than 16,777,216 pixels; refused before"):
        check_upload(str(bomb), UploadLimits())
    bomb.write_bytes(_png_header_only(30000, 30000))  # past Pillow's own limit: refused by Pillow first
    with pytest.raises(ImageError, match="'bomb.png': too large to open safely"):
        check_upload(str(bomb), UploadLimits())
    big = tmp_path / "big.png"
    Image.new("RGB", (256, 256)).save(big)
    with pytest.raises(ImageError, match="upload limit"):
        check_upload(str(big), UploadLimits(max_bytes=100))
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ImageError, match="empty"):
        check_upload(str(empty), UploadLimits())
    with pytest.raises(ParamError):
        UploadLimits(max_pixels=media.MAX_INPUT_PIXELS + 1)


def test_upload_is_prepared_exactly_as_the_cli_prepares_it(tmp_path):
    rgba = np.random.default_rng(0).integers(0, 256, (100, 150, 4), dtype=np.uint8)
    path = tmp_path / "alpha.png"
    Image.fromarray(rgba).save(path)
    img, info = check_upload(str(path), UploadLimits())
    ours, _, _ = prepare_upload(img, info, 64, 128, "alpha.png")
    cli, _, _ = preparation.load_image(str(path), 64, 128)
    assert ours.shape == (64, 128, 3) and np.array_equal(ours, cli)
    with pytest.raises(ParamError, match="multiple of 64") as err:
        prepare_upload(img, info, 100, None, "alpha.png")
    assert err.value.field == "height"


def test_page_modules_do_not_import_the_model():
    code = ("import sys, svd_ms.app.ui, svd_ms.app.service, svd_ms.app.uploads, svd_ms.app.__main__;"
            "bad = [m for m in sys.modules if m.startswith(('svd_ms.pipeline', 'svd_ms.models', 'svd_ms.modules'))];"
            "print(bad); sys.exit(1 if bad else 0)")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr


def test_bad_flags_end_in_one_line(capsys):
    from svd_ms.app.__main__ import main
    assert main(["--SVD.fps=0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --SVD.fps=0") and "\n" not in err
    assert main(["--port=70000"]) == 2
    assert capsys.readouterr().err.strip() == "error: --port=70000 must be between 1 and 65535"
