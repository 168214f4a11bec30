"""The page served in this test process on a free loopback port, for the API and load tests: a
GenerationService around any pipeline factory, the page built by `build_page` (which registers the
script endpoints), launched with `python -m svd_ms.app`'s settings, closed on exit."""
import contextlib
import os
import socket
import warnings

from svd_ms.app.__main__ import page_info
from svd_ms.app.service import GenerationService
from svd_ms.app.ui import build_page
from svd_ms.app.uploads import UploadLimits


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
