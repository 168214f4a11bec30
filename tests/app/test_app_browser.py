"""The web page in a real headless Chromium (Debian's /usr/bin/chromium driven by Playwright):
`python -m svd_ms.app` on free local ports, one server with the bundled tiny UNTRAINED SVD model
(image to video, chained clips, video to video, history) and one with the tiny sv3d_p reference
model (orbit), started side by side. Each tab is driven once and its video checked (frames, size,
duration) with its sidecar; tabs a model cannot use are absent.

Set SVD_MS_SCREENSHOT=1 to also write the screenshots to assets/web_*.png (the README's)."""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from conftest import REFERENCE, ROOT

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
DEMO_IMAGE = os.path.join(ROOT, "assets", "demo_landscape.png")
# Gradio's page template loads this embedding helper from a CDN (async; the page works without it,
# and on a machine without internet it simply fails). Any other outside request fails the test.
KNOWN_OUTSIDE = ("https://cdnjs.cloudflare.com/ajax/libs/iframe-resizer/",)
START_S, GENERATE_S = 240, 300
FRAMES, STEPS, WIDTH, HEIGHT, FPS = 3, 2, 128, 64, 7
SV3D_P = [f"--SVD.config={REFERENCE}/tiny_sv3d_p.sgm.yaml", f"--SVD.checkpoint={REFERENCE}/tiny_sv3d_p.safetensors"]
SV3D_IMAGE = os.path.join(REFERENCE, "tiny_sv3d_p.input.png")
VIEWS, VIEW_SIDE = 5, 64
DEMO_CONFIG = os.path.join(ROOT, "configs", "demo", "tiny_random.yaml")
LORA_FILE, LORA_SCALE = "style.safetensors", 0.8


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url):
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code


class Server:
    """`python -m svd_ms.app` with `flags` on a free port, started now and waited for by `ready()`."""

    def __init__(self, tmp_path_factory, name, flags):
        self.out = tmp_path_factory.mktemp(f"{name}_out")
        self.log = self.out.parent / f"{name}.log"
        self.url = f"http://127.0.0.1:{_free_port()}"
        self.t0 = time.perf_counter()
        env = dict(os.environ, GRADIO_TEMP_DIR=str(tmp_path_factory.mktemp(f"{name}_gradio_tmp")))
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "svd_ms.app", "--port", self.url.rsplit(":", 1)[1],
                                          "--output_dir", str(self.out), "--device_target", "CPU", "--mode", "1",
                                          *flags], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)

    def ready(self):
        while _get_or_none(self.url) != 200:
            assert self.proc.poll() is None, f"the app exited ({self.proc.returncode}):\n{self.log.read_text()[-3000:]}"
            assert time.perf_counter() - self.t0 < START_S, \
                f"the app did not serve in {START_S} s:\n{self.log.read_text()}"
            time.sleep(0.5)
        print(f"\n[web] {self.log.stem} serving after {time.perf_counter() - self.t0:.1f} s")
        return {"url": self.url, "out": self.out, "proc": self.proc, "log": self.log}

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        print(f"[web] {self.log.stem} log tail:\n{self.log.read_text()[-800:]}")


def _adapter_folder(tmp_path_factory):
    """A --lora_dir holding one adapter for the demo model's UNet (random, in diffusers' names)."""
    from lora_adapters import write_adapter
    from omegaconf import OmegaConf

    from svd_ms.util import instantiate_from_config
    folder = tmp_path_factory.mktemp("adapters")
    unet = instantiate_from_config(OmegaConf.load(DEMO_CONFIG).model.params.network_config)
    write_adapter(folder / LORA_FILE, unet, seed=3, size=0.3)
    return folder


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """Both servers run at once (their start-up, mostly imports, overlaps the adapter's writing)."""
    started = {"sv3d_p": Server(tmp_path_factory, "sv3d_p", SV3D_P)}
    folder = _adapter_folder(tmp_path_factory)
    started["svd"] = Server(tmp_path_factory, "svd", [f"--lora_dir={folder}"])
    started["svd"].lora_dir = folder
    try:
        yield started
    finally:
        for server in started.values():
            server.stop()


@pytest.fixture(scope="module")
def app(servers):
    return dict(servers["svd"].ready(), lora_dir=servers["svd"].lora_dir)


@pytest.fixture(scope="module")
def orbit_app(servers):
    return servers["sv3d_p"].ready()


def _get_or_none(url):
    try:
        return _get(url)
    except OSError:
        return None


@pytest.fixture(scope="module")
def browser():
    assert os.path.exists(CHROMIUM), f"{CHROMIUM} missing: apt-get install chromium (.ci/run does)"
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def open_page(app, browser):
    """New pages, each its own browser context (its own session, like separate visitors); every
    request they make is checked to stay on this machine. `server`: another app than the SVD one."""
    contexts, outside = [], []

    def make(server=None, ready="#generate"):
        url = (server or app)["url"]
        ctx = browser.new_context(viewport={"width": 1280, "height": 1000})
        contexts.append(ctx)
        page = ctx.new_page()
        page.on("request", lambda r: outside.append(r.url) if not r.url.startswith(
            (url, "data:", "blob:")) and not r.url.startswith(KNOWN_OUTSIDE) else None)
        page.goto(url)
        page.wait_for_selector(ready)
        return page

    yield make
    for ctx in contexts:
        ctx.close()
    assert not outside, f"the page requested outside addresses: {outside}"


def _set_number(page, elem_id, value):
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Tab")


def _status(page):
    return page.locator("#status").inner_text()


def _video_metadata(page):
    return page.eval_on_selector("#result-video video", """v => new Promise(resolve => {
        const done = () => resolve({duration: v.duration, width: v.videoWidth, height: v.videoHeight,
                                    src: v.currentSrc});
        if (v.readyState >= 1) done(); else v.addEventListener('loadedmetadata', done);
    })""")


def test_text_file_named_png_shows_an_error_and_the_app_keeps_serving(app, open_page, tmp_path):
    page = open_page()
    fake = tmp_path / "holiday.png"
    fake.write_text("this is a text file, not a picture\n")
    page.locator("#image-upload input[type=file]").set_input_files(str(fake))
    page.wait_for_function("document.querySelector('#message').innerText.includes('holiday.png')")
    shown = page.locator("#message").inner_text().strip()
    print(f"[web] on the page: {shown}")
    assert shown.startswith("Error: 'holiday.png': not an image") and "\n" not in shown
    assert "Traceback" not in page.content()
    page.click("#generate")  # the same file again, now through the generate path
    page.wait_for_function("document.querySelector('#status').innerText.includes('Not started')")
    assert page.locator("#message").inner_text().strip().startswith("Error: 'holiday.png': not an image")
    # still serving: the page answers, and a new visitor gets a working page
    assert app["proc"].poll() is None and _get(app["url"]) == 200
    other = open_page()
    seed_before = other.locator("#seed input[type=number]").input_value()
    other.click("#randomize")
    other.wait_for_function(f"document.querySelector('#seed input').value !== '{seed_before}'")


def test_server_paths_cannot_be_fetched(app):
    for path in ("/etc/passwd", os.path.join(ROOT, "README.md"), DEMO_IMAGE):
        assert _get(f"{app['url']}/gradio_api/file={path}") == 403, path


def test_generate_in_the_browser_while_a_second_visitor_waits(app, open_page, tmp_path):
    first, second, third = open_page(), open_page(), open_page()
    for page in (first, second, third):
        page.locator("#image-upload input[type=file]").set_input_files(DEMO_IMAGE)
        page.wait_for_function("document.querySelector('#preview img') !== null")
        for elem_id, value in (("steps", STEPS), ("frames", FRAMES), ("width", WIDTH), ("height", HEIGHT)):
            _set_number(page, elem_id, value)
    # every picture the live preview shows during the first run, read from the page as it changes
    first.evaluate("""() => { window.previews = [];
        new MutationObserver(() => { const img = document.querySelector('#live-preview img');
            if (img && !window.previews.includes(img.src)) window.previews.push(img.src); })
        .observe(document.querySelector('#live-preview'), {subtree: true, childList: true, attributes: true}); }""")
    t0 = time.perf_counter()
    first.click("#generate")
    first.wait_for_function("document.querySelector('#status').innerText.includes('Running')")
    second.click("#generate")
    second.wait_for_function("document.querySelector('#status').innerText.includes('position 1')")
    third.click("#generate")
    third.wait_for_function("document.querySelector('#status').innerText.includes('position 2')")
    print(f"[web] queue seen: first '{_status(first)}' / second '{_status(second)}' / third '{_status(third)}'")
    third.click("#cancel")  # a waiting visitor leaves the queue
    third.wait_for_function("document.querySelector('#status').innerText.includes('Cancelled')")

    first.wait_for_selector("#result-video video", timeout=GENERATE_S * 1000)
    t_first = time.perf_counter() - t0
    meta = _video_metadata(first)
    print(f"[web] first video after {t_first:.1f} s: {meta}")
    assert meta["width"] == WIDTH and meta["height"] == HEIGHT
    assert abs(meta["duration"] - FRAMES / FPS) < 0.5 / FPS, meta
    status = _status(first)
    assert status.startswith("Done in") and f"{FRAMES} frames of {WIDTH}x{HEIGHT} at {FPS} fps [UNTRAINED]" in status
    shown = first.locator("#sidecar").inner_text()
    assert '"num_steps": 2' in shown.replace("\n", "") or "num_steps" in shown, shown[:300]
    video_name = meta["src"].rsplit("/", 1)[-1]
    record = json.loads((app["out"] / video_name.replace(".mp4", ".json")).read_text())
    assert record["video"] == video_name and record["status"] == "done" and record["untrained"] is True
    assert record["pipeline"]["num_steps"] == STEPS and len(record["timings"]["step_s"]) == STEPS
    assert (record["frames"], record["width"], record["height"]) == (FRAMES, WIDTH, HEIGHT)
    assert first.locator("#download").is_visible()
    previews = first.evaluate("window.previews")
    print(f"[web] live preview pictures seen during the first run: {len(previews)} ({STEPS} sampling steps)")
    assert len(previews) >= 2, previews

    second.wait_for_selector("#result-video video", timeout=GENERATE_S * 1000)
    print(f"[web] second video after {time.perf_counter() - t0:.1f} s: {_video_metadata(second)}")
    assert _status(second).startswith("Done in")
    assert _get(meta["src"]) == 200

    videos = sorted(app["out"].glob("*.mp4"))
    assert len(videos) == 2, videos  # the cancelled visitor's job wrote nothing
    import imageio_ffmpeg
    probe = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", str(videos[0])],
                           capture_output=True, text=True).stderr
    stream = next(line for line in probe.splitlines() if "Video:" in line)
    print(f"[web] served file: {stream.strip()}")
    assert "h264" in stream and "yuv420p" in stream

    _screenshot(first, tmp_path, "web_page.png")


def _screenshot(page, tmp_path, name):
    shot = tmp_path / name
    page.screenshot(path=str(shot), full_page=True)
    print(f"[web] screenshot: {shot}")
    if os.environ.get("SVD_MS_SCREENSHOT", "") not in ("", "0"):
        shutil.copyfile(shot, os.path.join(ROOT, "assets", name))


def _tabs(page):
    return [t.strip() for t in page.locator("button[role=tab]").all_inner_texts()]


def _record_of(app, meta):
    return json.loads((app["out"] / meta["src"].rsplit("/", 1)[-1].replace(".mp4", ".json")).read_text())


def _check_video(meta, frames, width, height, fps=FPS):
    assert meta["width"] == width and meta["height"] == height, meta
    assert abs(meta["duration"] - frames / fps) < 0.5 / fps, meta


def test_chained_clips_arrive_one_by_one_then_video_to_video_and_the_history(app, open_page, tmp_path):
    page = open_page()
    assert _tabs(page) == ["Image to video", "Video to video"]  # no orbit on an SVD model
    page.locator("#image-upload input[type=file]").set_input_files(DEMO_IMAGE)
    page.wait_for_function("document.querySelector('#preview img') !== null")
    for elem_id, value in (("steps", STEPS), ("frames", FRAMES), ("width", WIDTH), ("height", HEIGHT),
                           ("num-clips", 2)):
        _set_number(page, elem_id, value)
    page.locator("#lora-settings").get_by_text("LoRA adapters").click()  # unfold, then give the adapter a scale
    assert LORA_FILE in page.locator("#lora").inner_text()
    page.locator("#lora tbody tr").first.locator("[data-editable='true']").last.dblclick(force=True)
    page.keyboard.press("ControlOrMeta+a")
    page.keyboard.type(str(LORA_SCALE))
    page.keyboard.press("Enter")
    page.wait_for_function(f"document.querySelector('#lora tbody').innerText.includes('{LORA_SCALE}')")
    page.click("#generate")
    # the first clip is on the page while the second is still being made
    page.wait_for_function("document.querySelectorAll('#clips video, #clips img').length >= 1",
                           timeout=GENERATE_S * 1000)
    status_then = _status(page)
    print(f"[web] first clip shown while: {status_then!r}")
    assert "Running" in status_then  # the second clip is still being made
    page.wait_for_selector("#result-video video", timeout=GENERATE_S * 1000)
    meta = _video_metadata(page)
    _check_video(meta, 2 * FRAMES - 1, WIDTH, HEIGHT)
    record = _record_of(app, meta)
    assert record["clips"] == 2 and record["frames"] == 2 * FRAMES - 1 and "--SVD.num_clips=2" in record["reproduce"]
    assert record["settings"]["lora"] == [f"{app['lora_dir'].resolve() / LORA_FILE}:{LORA_SCALE}"], record["settings"]
    chain_video = app["out"] / meta["src"].rsplit("/", 1)[-1]

    page.click("button[role=tab]:has-text('Video to video')")
    page.locator("#video-upload input[type=file]").set_input_files(str(chain_video))
    page.wait_for_function("document.querySelector('#video-upload').innerText.includes('.mp4')")
    page.click("#video-generate")
    page.wait_for_function("""src => { const v = document.querySelector('#result-video video');
        return v && v.currentSrc && v.currentSrc !== src
            && document.querySelector('#status').innerText.startsWith('Done'); }""",
                           arg=meta["src"], timeout=GENERATE_S * 1000)
    meta = _video_metadata(page)
    _check_video(meta, FRAMES, WIDTH, HEIGHT)
    record = _record_of(app, meta)
    assert record["kind"] == "video_to_video" and record["pipeline"]["strength"] == 0.7
    assert "--video=" in record["reproduce"] and record["frames"] == FRAMES
    _screenshot(page, tmp_path, "web_video_to_video.png")

    page.locator("#history").get_by_text("History: this server's results").click()  # unfold it
    page.click("#history-refresh")
    page.wait_for_function("document.querySelectorAll('#history-gallery img').length === 2")  # this session's two
    page.locator("#history-gallery img").first.click()
    page.wait_for_function("document.querySelector('#history-settings').innerText.includes('video_to_video')")
    _set_number(page, "seed", 5)
    page.click("#history-use")
    page.wait_for_function("document.querySelector('#message').innerText.includes('Settings restored')")
    assert page.locator("#seed input[type=number]").input_value() == "42"


def test_the_orbit_tab_of_an_sv3d_p_model(orbit_app, open_page, tmp_path):
    page = open_page(orbit_app, ready="#orbit-generate")
    assert _tabs(page) == ["Orbit (SV3D)"]  # image to video and video to video are hidden for SV3D
    _set_number(page, "view-size", VIEW_SIDE)
    page.locator("#keep-background input[type=checkbox]").check()  # the reference picture has no alpha
    page.locator("#orbit-upload input[type=file]").set_input_files(SV3D_IMAGE)
    page.wait_for_function("document.querySelector('#cutout img') !== null")
    assert page.locator("#camera-plot img").count() == 1
    table = page.locator("#camera").inner_text()
    assert all(str(a) in table for a in (72, 144, 216, 288)), table  # sv3d_p's default path: 5 views around
    _set_number(page, "steps", STEPS)
    page.click("#orbit-generate")
    page.wait_for_selector("#result-video video", timeout=GENERATE_S * 1000)
    meta = _video_metadata(page)
    fps = int(page.locator("#fps input[type=number]").input_value())
    _check_video(meta, VIEWS, VIEW_SIDE, VIEW_SIDE, fps)
    record = _record_of(orbit_app, meta)
    assert record["kind"] == "orbit" and record["frames"] == VIEWS and record["camera"]["elevations_deg"] == [10.0] * 5
    assert "--keep_background=true" in record["reproduce"] and "tiny_sv3d_p.input.png" in record["reproduce"]
    _screenshot(page, tmp_path, "web_orbit.png")
