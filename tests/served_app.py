"""The page served on a free loopback port, for the API and load tests: a GenerationService
around any pipeline factory, the page built by `build_page` (which registers the script
endpoints), launched with `python -m svd_ms.app`'s settings, closed on exit. In the test's own
process (`served`), or in a process of its own with a fast gated stand-in pipeline
(`python -m served_app OUT UPLOADS HOLD_FILE MAX_QUEUE LIFETIME_S`, the load test's server)."""
import contextlib
import os
import socket
import sys
import threading
import time
import warnings
from types import SimpleNamespace

from conftest import ROOT
from fake_pipeline import DEFAULT_STEPS, FakePipeline

from svd_ms.app.__main__ import page_info
from svd_ms.app.service import GenerationService
from svd_ms.app.ui import build_page
from svd_ms.app.uploads import UploadLimits

DEMO_CONFIG = os.path.join(ROOT, "configs", "demo", "tiny_random.yaml")
GATE_WAIT_S = 60


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def served(params, pipeline_factory, output_dir, upload_dir, max_queue=8, limits=UploadLimits()):
    """Yield (url, service). Uploads land in `upload_dir` (GRADIO_TEMP_DIR, restored after)."""
    old_tmp = os.environ.get("GRADIO_TEMP_DIR")
    os.environ["GRADIO_TEMP_DIR"] = str(upload_dir)
    service = GenerationService(params, pipeline_factory, str(output_dir), max_queue=max_queue).start(timeout=300)
    page = None
    try:
        page = build_page(service, page_info(service, params, "CPU", 1, limits, None))
        page.queue(max_size=max_queue + 8)
        # As svd_ms.app.__main__ launches it: loopback, no share link, only the output folder served.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*show_api.*", category=DeprecationWarning)
            page.launch(server_name="127.0.0.1", server_port=free_port(), share=False, inbrowser=False,
                        allowed_paths=[str(service.output_dir)], max_file_size=limits.max_bytes, show_error=False,
                        show_api=False, ssr_mode=False, prevent_thread_lock=True, quiet=True)
        yield page.local_url.rstrip("/"), service
    finally:
        if page is not None:
            page.close()
        service.close(timeout=10)
        if old_tmp is None:
            os.environ.pop("GRADIO_TEMP_DIR", None)
        else:
            os.environ["GRADIO_TEMP_DIR"] = old_tmp


# ---- the load test's server: its own process, so that its memory is measured alone ----------------

class GatedFastPipeline(FakePipeline):
    """FakePipeline's frames after short steps reported to the callback (so cancelling works as
    with the real pipeline); while the file `hold` exists, a step waits for it to go."""
    hold = None

    def generate(self, image, seed=None, callback=None, **overrides):
        from svd_ms.errors import GenerationCancelled
        steps = overrides.get("num_steps") or DEFAULT_STEPS
        for i in range(steps):
            deadline = time.time() + GATE_WAIT_S
            while os.path.exists(self.hold):
                assert time.time() < deadline, "the test never let the run go on"
                time.sleep(0.01)
            time.sleep(0.005)
            if callback(SimpleNamespace(stage="sampling", index=i, total=steps)) is False:
                raise GenerationCancelled("stopped by the step callback")
        return super().generate(image, seed=seed, **overrides)


def serve_until_stdin_closes(out, uploads, hold, max_queue, lifetime_s):
    """Print the URL, then serve until the parent closes stdin (or dies), or `lifetime_s` passes."""
    from svd_ms.params import SVDParams
    from svd_ms.runtime import setup_device

    setup_device("CPU", mode=1)
    GatedFastPipeline.hold = hold
    closed = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), closed.set()), daemon=True).start()
    with served(SVDParams(config=DEMO_CONFIG), GatedFastPipeline, out, uploads, max_queue=max_queue) as (url, _):
        print(f"URL {url}", flush=True)
        closed.wait(lifetime_s)


if __name__ == "__main__":
    serve_until_stdin_closes(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5]))
