"""`python -m svd_ms.app`: serve the web page (image to video, chained clips, video to video, SV3D
orbits: what the served model does; LoRA adapters from --lora_dir).

    python -m svd_ms.app                                    # the bundled UNTRAINED demo on 127.0.0.1:7860
    python -m svd_ms.app --SVD.config=configs/svd_xt.yaml --SVD.checkpoint=checkpoints/svd_xt.ckpt
    python -m svd_ms.app --SVD.config=configs/sv3d_p.yaml --SVD.checkpoint=checkpoints/sv3d_p.safetensors

The `--SVD.*` flags are image_to_video.py's (svd_ms.params.SVDParams). The model is built once,
before the page is served. Nothing is shared publicly: the server listens on --host only.
"""
import os

os.environ.setdefault("GLOG_v", "3")  # MindSpore's C++ warnings; before mindspore is imported
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no telemetry, no version check: nothing leaves

import argparse  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import traceback  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Callable, Literal, Optional, Sequence  # noqa: E402

from ..errors import ParamError, SVDError, UsageError, one_line  # noqa: E402
from ..params import SVDParams  # noqa: E402

REPO_DIR = Path(__file__).resolve().parents[2]
DEMO_CONFIG = REPO_DIR / "configs" / "demo" / "tiny_random.yaml"
DEMO_IMAGE = REPO_DIR / "assets" / "demo_landscape.png"
EXIT_SETUP = 2


def build_parser():
    from jsonargparse import ActionConfigFile, ArgumentParser

    parser = ArgumentParser(
        prog="python -m svd_ms.app",
        description="Stable Video Diffusion on MindSpore as a web page: upload an image, watch the steps, get the "
        "video. Without flags it serves the bundled UNTRAINED demo model.",
        env_prefix="SVD_APP", default_env=False, exit_on_error=False)
    parser.add_argument("--config", action=ActionConfigFile, help="YAML file holding any of these flags.")
    parser.add_class_arguments(SVDParams, "SVD", help="Model and default sampling settings (svd_ms.params.SVDParams); "
                               "the page can change the sampling settings per request.")
    parser.set_defaults({"SVD.config": str(DEMO_CONFIG)})
    parser.add_argument("--host", type=str, default="127.0.0.1",
                        help="Address to listen on. 127.0.0.1: this machine only; 0.0.0.0 opens it to the network "
                        "(there is no login: do that only on a network you trust).")
    parser.add_argument("--port", type=int, default=7860, help="Port to listen on.")
    parser.add_argument("--output_dir", type=str, default="outputs/web",
                        help="Where the videos and their sidecars go; the only files the page serves.")
    parser.add_argument("--mode", type=Optional[Literal[0, 1]], default=None,
                        help="MindSpore execution mode: 0 graph, 1 PyNative. Unset: PyNative on CPU (graph mode holds "
                        "far more memory there, README 'Performance'), graph on Ascend and GPU.")
    parser.add_argument("--device_target", type=Optional[Literal["Ascend", "GPU", "CPU"]], default=None,
                        help="Backend. Unset: the best one present (Ascend, then GPU, then CPU).")
    parser.add_argument("--device_id", type=Optional[int], default=None,
                        help="Device on Ascend/GPU (unset: DEVICE_ID, else 0). One server uses one device and runs "
                        "one generation at a time; start one server per device for more.")
    parser.add_argument("--max_queue", type=int, default=8, help="Requests that may wait; more are refused.")
    parser.add_argument("--max_upload_mb", type=float, default=20.0, help="Largest upload, in megabytes.")
    parser.add_argument("--max_upload_pixels", type=int, default=4096 * 4096,
                        help="Largest upload in pixels, read from the header before decoding (decompression bombs).")
    parser.add_argument("--keep_outputs", type=int, default=100,
                        help="Results kept in --output_dir; older ones are deleted.")
    parser.add_argument("--lora_dir", type=Optional[str], default=None,
                        help="Folder of LoRA adapter files (.safetensors) visitors may pick, each with a scale; "
                        "merged into the served model per request without reloading it. Unset: no LoRA on the page.")
    parser.add_argument("--shared_history", type=bool, default=False,
                        help="Show every visitor the server's whole history; unset, each page session sees its own "
                        "results only.")
    return parser


def _svd_params(cfg) -> SVDParams:
    svd = cfg.SVD.as_dict() if hasattr(cfg.SVD, "as_dict") else dict(vars(cfg.SVD))
    svd.pop("__path__", None)
    try:
        return SVDParams(**svd)
    except ParamError as exc:
        raise UsageError(f"--SVD.{exc}" if str(exc).startswith(exc.field) else f"--SVD.{exc.field}: {exc}") from None


def _default_pipeline_factory(params: SVDParams):
    from ..pipeline import SVDInferPipeline
    return SVDInferPipeline(params=params)


def page_info(service, params: SVDParams, device_target: str, mode: int, limits, example: Optional[str],
              shared_history: bool = False):
    from .capabilities import capabilities_of
    from .ui import PageInfo

    pipe = service.pipeline
    sizes = pipe.resolve(params)
    weights = params.checkpoint or "random weights (UNTRAINED)"
    config = os.path.basename(params.config) if params.config else "derived from the diffusers folder"
    model_line = (f"Model `{config}`, {weights}; {device_target}, "
                  f"{'graph' if mode == 0 else 'PyNative'} mode, precision {params.amp_level}. "
                  f"One generation at a time; others wait in a queue.")
    caps = getattr(service, "capabilities", None) or capabilities_of(pipe, params.sampler, None)
    folder = getattr(service, "lora_folder", None)
    what = "an orbit (SV3D)" if caps.orbit else "image to video"
    return PageInfo(title=f"svd-ms: {what}" + (" (UNTRAINED demo)" if service.untrained else ""),
                    model_line=model_line, untrained=service.untrained, num_frames=sizes["num_frames"],
                    num_steps=sizes["num_steps"], fps=params.fps, motion_bucket_id=params.motion_bucket_id,
                    noise_aug_strength=sizes["noise_aug_strength"], decode_chunk_size=params.decode_chunk_size,
                    example_image=example if caps.image_to_video else None, limits=limits, capabilities=caps,
                    sampler=params.sampler, lora_names=tuple(folder.names()) if folder else (),
                    shared_history=shared_history)


def main(argv: Optional[Sequence[str]] = None, pipeline_factory: Optional[Callable] = None) -> int:
    service = None
    try:
        cfg = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
        params = _svd_params(cfg)
        if not 0 < cfg.port < 65536:
            raise UsageError(f"--port={cfg.port} must be between 1 and 65535")
        from .service import GenerationService
        from .uploads import UploadLimits
        try:
            limits = UploadLimits(int(cfg.max_upload_mb * 2**20), cfg.max_upload_pixels)
        except ParamError as exc:
            raise UsageError(f"--{exc.field}: {exc}") from None
        from ..runtime import setup_device
        target, mode = setup_device(cfg.device_target, cfg.device_id, cfg.mode)  # mode None: the device's
        if params.checkpoint is None:
            print("warning: UNTRAINED MODEL: --SVD.checkpoint is not set, so the weights are random; the page says "
                  "so on every result", file=sys.stderr, flush=True)
        service = GenerationService(params, pipeline_factory or _default_pipeline_factory, cfg.output_dir,
                                    device_target=target, mode=mode, max_queue=cfg.max_queue,
                                    keep_outputs=cfg.keep_outputs, lora_dir=cfg.lora_dir)
        print(f"building the model ({params.config}) ...", flush=True)
        service.start()
        print(f"model ready in {service.model_load_s:.1f} s", flush=True)
        example = str(DEMO_IMAGE) if DEMO_IMAGE.is_file() else None
        from .ui import build_page
        page = build_page(service, page_info(service, params, target, mode, limits, example, cfg.shared_history))
        page.queue(max_size=cfg.max_queue + 8)
        # share=False: no public tunnel. allowed_paths: the output directory and nothing else of
        # this machine (uploads and Gradio's own cache are served by Gradio's rules).
        try:
            warnings.filterwarnings("ignore", message=".*show_api.*", category=DeprecationWarning)
            page.launch(server_name=cfg.host, server_port=cfg.port, share=False, inbrowser=False,
                        allowed_paths=[str(service.output_dir)], max_file_size=limits.max_bytes, show_error=False,
                        show_api=False, ssr_mode=False, prevent_thread_lock=True, quiet=True)
        except OSError as exc:
            raise UsageError(f"--host={cfg.host} --port={cfg.port}: cannot listen there ({one_line(exc)})") from None
        print(f"serving on http://{cfg.host}:{cfg.port} (Ctrl-C to stop)", flush=True)
        _block_until_stopped()
        return 0
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr, flush=True)
        return 0
    except argparse.ArgumentError as exc:
        print(f"error: {' '.join(str(exc).split())} (see --help)", file=sys.stderr, flush=True)
        return EXIT_SETUP
    except SVDError as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr, flush=True)
        return EXIT_SETUP
    except Exception as exc:
        if os.environ.get("SVD_DEBUG", "") not in ("", "0"):
            traceback.print_exc()
        print(f"error: unexpected {one_line(exc)} (set SVD_DEBUG=1 for the traceback)", file=sys.stderr, flush=True)
        return EXIT_SETUP
    finally:
        if service is not None:
            service.close(timeout=5)


def _block_until_stopped() -> None:
    """Wait for Ctrl-C or SIGTERM (what process managers send)."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
