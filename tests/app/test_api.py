"""svd_ms.app.api: the page's functions for scripts, called with gradio_client against the page
served on a free loopback port with the bundled tiny UNTRAINED model: a script's video equals the
one the page's own path makes (same upload checks, same service) for the same settings and seed;
scripts/web_client.py works as printed; /status and /cancel see the client's own job; hostile
requests get one line and the server keeps serving."""
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import ROOT
from hostile_files import png_bomb
from served_app import served
from svd_ms.app.__main__ import DEMO_CONFIG, DEMO_IMAGE, _default_pipeline_factory
from svd_ms.app.service import Request
from svd_ms.app.uploads import UploadLimits, check_upload, prepare_upload
from svd_ms.params import SVDParams

SETTINGS = {"num_frames": 3, "num_steps": 2, "width": 128, "height": 64, "fps": 7}
SEED = 1234


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    out, uploads = tmp_path_factory.mktemp("api_out"), tmp_path_factory.mktemp("api_uploads")
    with served(SVDParams(config=str(DEMO_CONFIG)), _default_pipeline_factory, out, uploads) as (url, service):
        yield url, service


@pytest.fixture(scope="module")
def client(app):
    from gradio_client import Client
    return Client(app[0], verbose=False, download_files=str(app[1].output_dir.parent / "downloads"))


def _frames(path):
    import imageio
    with imageio.get_reader(str(path), format="FFMPEG") as reader:
        return np.stack([np.asarray(frame) for frame in reader])


def _page_path_video(service, settings, seed):
    """What the page's Generate does with the same upload and settings (svd_ms.app.ui.build_page's run)."""
    img, info = check_upload(str(DEMO_IMAGE), UploadLimits())
    array, info, _ = prepare_upload(img, info, settings["height"], settings["width"], info["path"])
    overrides = {k: v for k, v in settings.items() if k not in ("width", "height")}
    job = service.submit(Request(array, seed, overrides, info, height=settings["height"], width=settings["width"]))
    assert job.wait(300) and job.state == "done", job.error
    return job


def test_a_scripts_video_equals_the_pages(app, client):
    from gradio_client import handle_file

    t0 = time.perf_counter()
    video, sidecar = client.predict(handle_file(str(DEMO_IMAGE)), seed=SEED, **SETTINGS, api_name="/image_to_video")
    sidecar = json.loads(sidecar)
    took = time.perf_counter() - t0
    page = _page_path_video(app[1], SETTINGS, SEED)
    ours, theirs = _frames(video), _frames(page.video_path)
    diff = np.abs(ours.astype(int) - theirs.astype(int))
    print(f"\n[api] script video {ours.shape} in {took:.1f} s; vs the page's path: max |diff| {diff.max()} levels "
          f"(bound 0)")
    assert ours.shape == (3, 64, 128, 3) and diff.max() == 0
    assert (sidecar["seed"], sidecar["frames"], sidecar["width"], sidecar["height"]) == (SEED, 3, 128, 64)
    assert sidecar["pipeline"] == page.record["pipeline"] and sidecar["untrained"] is True
    assert sidecar["input"]["path"] == "demo_landscape.png"


def test_the_example_script_runs_as_printed(app, tmp_path):
    res = subprocess.run([sys.executable, "scripts/web_client.py", str(DEMO_IMAGE), "--url", app[0], "--seed",
                          str(SEED), "--frames", "3", "--steps", "2", "--width", "128", "--height", "64"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, GRADIO_ANALYTICS_ENABLED="False"))
    print(f"[api] scripts/web_client.py: {res.stdout.strip()} {res.stderr.strip()[-300:]}")
    assert res.returncode == 0, res.stderr
    path = res.stdout.strip().splitlines()[-1].split(" ", 1)[0]
    assert _frames(path).shape == (3, 64, 128, 3)


def test_status_and_cancel_see_the_clients_own_job(app, client):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    job = client.submit(handle_file(str(DEMO_IMAGE)), seed=5, num_frames=3, num_steps=200, width=128, height=64,
                        api_name="/image_to_video")
    deadline = time.time() + 300  # a busy CI host can take minutes to reach the first step
    while True:
        mine = client.predict(api_name="/status")["jobs"]
        if mine and mine[-1]["stage"] == "sampling":
            break
        assert time.time() < deadline, mine
        time.sleep(0.2)
    print(f"[api] status while running: {mine[-1]}")
    assert mine[-1]["state"] == "running" and mine[-1]["total"] > 200
    assert client.predict(api_name="/cancel") == 1
    with pytest.raises(AppError, match="^cancelled$"):
        job.result(timeout=300)
    assert client.predict(api_name="/status")["jobs"][-1]["state"] == "cancelled"
    from gradio_client import Client
    other = Client(app[0], verbose=False)
    assert other.predict(api_name="/status")["jobs"] == [] and other.predict(api_name="/cancel") == 0


def test_hostile_requests_get_one_line_and_the_server_keeps_serving(app, client, tmp_path):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    text = tmp_path / "holiday.png"
    text.write_text("this is a text file, not a picture\n")
    # Backslashes: one file name on Linux, a path on Windows. gradio_client strips them from the name
    # it sends; the server keeps only a name's last part anyway (test_uploads.py).
    sneaky = tmp_path / "..\\..\\etc\\evil.png"
    sneaky.write_text("not a picture either\n")
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_bomb(40000, 33334))  # 4 MB that would inflate to 4 GB
    cases = [("text file named .png", handle_file(str(text)), "'holiday.png': not an image"),
             ("name with path separators", handle_file(str(sneaky)), "'"),
             ("PNG that inflates to 4 GB", handle_file(str(bomb)), "'bomb.png': too large to open safely"),
             ("a server path, not an upload", {"path": "/etc/passwd"}, "image: only a file uploaded"),
             ("no file at all", "picture.png", "image: give an uploaded file")]
    for what, image, expected in cases:
        with pytest.raises(AppError) as err:
            client.predict(image, seed=1, **SETTINGS, api_name="/image_to_video")
        message = str(err.value)
        print(f"[api] {what}: {message}")
        assert message.startswith(expected) and "\n" not in message and str(tmp_path) not in message
        shown = message.split("'")[1] if message.startswith("'") else ""
        assert "/" not in shown and "\\" not in shown, shown  # a name, never a place on the server
    assert client.predict(api_name="/status")["queue_length"] == 0  # still serving
