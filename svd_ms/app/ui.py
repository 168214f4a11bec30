"""The page: Gradio components and their wiring to a GenerationService. No model code here; the
service owns the pipeline.

Element ids (#image-upload, #generate, #cancel, #status, #message, #result-video, #download,
#sidecar, ...) are part of the page's contract: the browser test drives the page through them.
"""
import dataclasses
import html
from dataclasses import dataclass
from typing import Any, Dict, Optional

from ..errors import ParamError, SVDError, one_line
from ..params import SVDParams
from ..seeds import SEED_MOD, draw_seed
from .api import register_api
from .service import CANCELLED, DONE, FAILED, GenerationService, Request
from .uploads import UploadLimits, check_upload, prepare_upload

POLL_S = 0.25
PREVIEW_SIDE = 512
SIZE_HELP = ("Multiple of 64 (64, 128, ..., 1024): the latents are 1/8 of the image and the UNet halves them "
             "three times. The image is scaled to cover width x height and its centre is cut out. Empty: the "
             "image's own size, each side brought down to a multiple of 64 (one empty side follows the aspect "
             "ratio); 0 counts as empty. The released models were trained at 1024 x 576.")
CSS = """
#untrained-banner {background: #fff3cd; border: 2px solid #d39e00; border-radius: 6px; padding: 4px 12px;}
#message .svd-error {color: #b00020; font-weight: 600;}
#status progress {width: 100%; height: 14px;}
"""


@dataclass
class PageInfo:
    """What the page says about the model it serves, and its defaults."""
    title: str
    model_line: str
    untrained: bool
    num_frames: int
    num_steps: int
    fps: int
    motion_bucket_id: int
    noise_aug_strength: float
    decode_chunk_size: Optional[int]
    example_image: Optional[str]
    limits: UploadLimits


def status_html(text: str, done: int = 0, total: int = 0) -> str:
    bar = f'<progress value="{done}" max="{max(total, 1)}"></progress>' if total else ""
    return f'<div class="svd-status">{bar}<div class="svd-status-text">{html.escape(text)}</div></div>'


def message_html(text: str = "", error: bool = True) -> str:
    if not text:
        return ""
    css = "svd-error" if error else "svd-note"
    return f'<div class="{css}" role="alert">{"Error: " if error else ""}{html.escape(text)}</div>'


def _as_int(name: str, value) -> Optional[int]:
    """A page number as an int; a fraction is the visitor's mistake, reported by name."""
    if value is None or value == "":
        return None
    if isinstance(value, float):
        if not value.is_integer():
            raise ParamError(name, f"{name}={value} must be a whole number")
        value = int(value)
    return value


def _page_words(note: str) -> str:
    """A note written for the CLI, in the page's words (its fields instead of flags)."""
    for flag, field in (("--width=", "width "), ("--height=", "height "), ("--width/--height", "width/height"),
                        ("--SVD.noise_aug_strength", "noise augmentation")):
        note = note.replace(flag, field)
    return note


def _thumbnail(img):
    img = img.copy()
    img.thumbnail((PREVIEW_SIDE, PREVIEW_SIDE))
    return img


# ---- sampler and guidance controls -----------------------------------------------------------
CONFIG_DEFAULT = "(the config's)"
CACHE_NUMBERS = ("cache_interval", "cache_branch")


def sampling_controls(info: PageInfo) -> Dict[str, Any]:
    """{SVDParams field name: component} for the sampler and guidance options; empty or
    CONFIG_DEFAULT values keep the model config's own."""
    import gradio as gr

    from ..sampling_options import GUIDERS, SAMPLERS
    with gr.Row():
        controls = {
            "sampler": gr.Dropdown([CONFIG_DEFAULT, *SAMPLERS], value=CONFIG_DEFAULT, label="Sampler",
                                   elem_id="sampler", info="lcm: AnimateLCM's 4-step sampler (needs its weights)"),
            "guider": gr.Dropdown([CONFIG_DEFAULT, *GUIDERS], value=CONFIG_DEFAULT, label="Guidance",
                                  elem_id="guider", info="none: no guidance, one UNet pass per step"),
            # Text, not numbers: an empty field must mean "the config's", and Gradio shows None as 0.
            "min_guidance_scale": gr.Textbox(label="Min guidance scale", value="", placeholder="the config's",
                                             elem_id="min_guidance"),
            "max_guidance_scale": gr.Textbox(label="Max guidance scale", value="", placeholder="the config's",
                                             elem_id="max_guidance"),
        }
    controls.update(cache_controls())
    return controls


def cache_controls() -> Dict[str, Any]:
    """{SVDParams field name: component} for DeepCache (docs/deepcache.md), folded away: off by
    default; the interval and branch start at SVDParams' defaults and an emptied field keeps them."""
    import gradio as gr

    defaults = {f.name: f.default for f in dataclasses.fields(SVDParams)}
    with gr.Accordion("Feature cache (DeepCache)", open=False, elem_id="cache-settings"):
        with gr.Row():
            return {
                "cache": gr.Dropdown([("off", "none"), ("deepcache", "deepcache")], value=defaults["cache"],
                                     label="Cache", elem_id="cache",
                                     info="deepcache: reuse the UNet's deep features between steps (faster, "
                                          "slightly different video)"),
                "cache_interval": gr.Number(label="Cache interval", value=defaults["cache_interval"], precision=0,
                                            elem_id="cache_interval",
                                            info="The whole UNet runs every N-th step; the steps between reuse it"),
                "cache_branch": gr.Number(label="Cache branch", value=defaults["cache_branch"], precision=0,
                                          elem_id="cache_branch",
                                          info="The skip branch recomputed on cached steps; 0: the shallowest, "
                                               "fastest"),
            }


def _option(name: str, value):
    if isinstance(value, str):
        value = value.strip()
    if value in (None, "", CONFIG_DEFAULT):
        return None
    if name in CACHE_NUMBERS:
        return _as_int(name, value)
    if name.endswith("guidance_scale"):
        try:
            return float(value)
        except ValueError:
            raise ParamError(name, f"{name} must be a number, got {value!r}") from None
    return value


def _overrides(frames, steps, motion, fps, noise, chunk, extra: Dict[str, Any]) -> Dict[str, Any]:
    # An empty decode chunk arrives as 0 or None: both mean all frames at once.
    values = {"num_frames": _as_int("num_frames", frames), "num_steps": _as_int("num_steps", steps),
              "motion_bucket_id": _as_int("motion_bucket_id", motion), "fps": _as_int("fps", fps),
              "noise_aug_strength": noise, "decode_chunk_size": _as_int("decode_chunk_size", chunk) or None}
    for key in ("motion_bucket_id", "fps", "noise_aug_strength"):
        if values[key] is None:
            raise ParamError(key, f"{key} is empty: give a value")
    for name, value in extra.items():
        value = _option(name, value)
        if value is not None or name not in CACHE_NUMBERS:  # an emptied cache number keeps the default
            values[name] = value
    return values


def build_page(service: GenerationService, info: PageInfo):
    import gradio as gr

    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                              font_mono=["ui-monospace", "monospace"])  # system fonts: nothing fetched
    with gr.Blocks(title=info.title, theme=theme, css=CSS, analytics_enabled=False,
                   delete_cache=(3600, 3600)) as page:
        gr.Markdown(f"# {info.title}\n{info.model_line}")
        if info.untrained:
            gr.Markdown("**UNTRAINED model: random weights.** This demo shows the whole path from image to "
                        "video; the video is noise. Serve real weights with `--SVD.checkpoint`.",
                        elem_id="untrained-banner")
        use_example = gr.State(info.example_image is not None)
        with gr.Row():
            with gr.Column(scale=1):
                upload = gr.File(label=f"Image (PNG, JPEG, WebP, ...; at most {info.limits.max_bytes / 2**20:.0f} MB "
                                 f"and {info.limits.max_pixels / 1e6:.0f} megapixels)",
                                 file_types=["image"], type="filepath", file_count="single", elem_id="image-upload")
                example_btn = gr.Button("Use the bundled example image", size="sm", elem_id="use-example",
                                        visible=info.example_image is not None)
                preview = gr.Image(label="Conditioning image", type="pil", interactive=False, height=220,
                                   elem_id="preview", show_download_button=False)
                with gr.Row():
                    width = gr.Number(label="Width", value=None, precision=0, step=64, elem_id="width",
                                      info=SIZE_HELP)
                    height = gr.Number(label="Height", value=None, precision=0, step=64, elem_id="height",
                                       info="Multiple of 64; see Width.")
                with gr.Row():
                    frames = gr.Number(label="Frames", value=info.num_frames, precision=0,
                                       elem_id="frames")
                    steps = gr.Number(label="Sampling steps", value=info.num_steps, precision=0,
                                      elem_id="steps")
                with gr.Row():
                    motion = gr.Slider(0, 255, value=info.motion_bucket_id, step=1, label="Motion bucket",
                                       info="0-255, more is more motion", elem_id="motion")
                    fps = gr.Slider(1, 60, value=info.fps, step=1, label="Frames per second",
                                    info="Conditions the model and sets the playback rate", elem_id="fps")
                with gr.Row():
                    noise = gr.Number(label="Noise augmentation", value=info.noise_aug_strength,
                                      step=0.01, info="Noise added to the conditioning image (cond_aug)",
                                      elem_id="noise")
                    chunk = gr.Number(label="Decode chunk size", value=info.decode_chunk_size, precision=0,
                                      info="Frames decoded at once; 0 or empty: all. Lower saves memory",
                                      elem_id="chunk")
                extra = sampling_controls(info)
                with gr.Row():
                    seed = gr.Number(label="Seed", value=42, precision=0, elem_id="seed",
                                     info=f"0 to {SEED_MOD - 1}")
                    randomize = gr.Button("Random seed", size="sm", elem_id="randomize")
                with gr.Row():
                    generate = gr.Button("Generate", variant="primary", elem_id="generate")
                    cancel = gr.Button("Cancel", variant="stop", elem_id="cancel")
            with gr.Column(scale=1):
                status = gr.HTML(status_html("Ready."), elem_id="status")
                message = gr.HTML("", elem_id="message")
                video = gr.Video(label="Result" + (" (UNTRAINED model)" if info.untrained else ""),
                                 interactive=False, autoplay=True, loop=True, elem_id="result-video")
                download = gr.DownloadButton("Download the mp4", visible=False, elem_id="download")
                sidecar = gr.JSON(label="Parameters used (the sidecar)", elem_id="sidecar")

        def show_upload(path):
            if path is None:
                return None, False, ""
            try:
                img, _ = check_upload(path, info.limits)
            except SVDError as exc:
                return None, False, message_html(one_line(exc))
            return _thumbnail(img), False, ""

        def show_example():
            img, _ = check_upload(info.example_image, info.limits)
            return None, _thumbnail(img), True, ""

        def initial_preview(selected):
            if not selected or info.example_image is None:
                return None
            return _thumbnail(check_upload(info.example_image, info.limits)[0])

        def run(values: Dict[Any, Any], request: gr.Request):
            # Inputs come as one {component: value} dict, so that the sampling controls can be added
            # without touching this signature.
            path, selected, s = values[upload], values[use_example], values[seed]
            outputs = dict.fromkeys((status, message, video, download, sidecar, preview, seed), gr.skip())
            try:
                if path is None and not (selected and info.example_image):
                    raise SVDError("no image: upload one" + (" or use the bundled example" if info.example_image
                                                             else ""))
                source = path if path is not None else info.example_image
                img, image_info = check_upload(source, info.limits)
                want_h, want_w = _as_int("height", values[height]) or None, _as_int("width", values[width]) or None
                array, image_info, warnings = prepare_upload(img, image_info, want_h, want_w, image_info["path"])
                s = _as_int("seed", s)
                if s is None:
                    s = draw_seed()
                    outputs[seed] = s
                overrides = _overrides(values[frames], values[steps], values[motion], values[fps], values[noise],
                                       values[chunk], {name: values[c] for name, c in extra.items()})
                job = service.submit(Request(array, s, overrides, image_info, height=want_h, width=want_w,
                                             owner=getattr(request, "session_hash", None)))
            except SVDError as exc:
                outputs.update({status: status_html("Not started."), message: message_html(one_line(exc))})
                yield outputs
                return
            from PIL import Image
            outputs.update({preview: Image.fromarray(array), video: None, sidecar: None,
                            download: gr.update(visible=False, value=None),
                            message: message_html("; ".join(_page_words(w) for w in warnings), error=False)})
            last = None
            try:
                while not job.wait(POLL_S):
                    ahead = service.position(job)
                    if ahead:
                        text, done, total = (f"Waiting in the queue: position {ahead} ({ahead} job"
                                             f"{'s' if ahead > 1 else ''} ahead of yours)"), 0, 0
                    else:
                        p = job.progress
                        text, done, total = f"Running: {p.detail or p.stage}", p.done, p.total
                    if (text, done) != last:
                        last = (text, done)
                        outputs[status] = status_html(text, done, total)
                        yield outputs
                        outputs = dict.fromkeys(outputs, gr.skip())
            except GeneratorExit:  # the visitor left: free the device for the others
                service.cancel(job)
                raise
            if job.state == DONE:
                took = job.finished - job.started
                outputs.update({
                    status: status_html(f"Done in {took:.1f} s: {job.record['frames']} frames of "
                                        f"{job.record['width']}x{job.record['height']} at {job.record['fps']} fps"
                                        + (" [UNTRAINED]" if info.untrained else ""),
                                        job.progress.total, job.progress.total),
                    video: str(job.video_path), sidecar: job.record,
                    download: gr.update(value=str(job.video_path), visible=True)})
            elif job.state == CANCELLED:
                outputs.update({status: status_html("Cancelled."), message: message_html("")})
            elif job.state == FAILED:
                outputs.update({status: status_html("Failed."), message: message_html(job.error or "failed")})
            yield outputs

        def cancel_mine(request: gr.Request):
            n = service.cancel_owner(getattr(request, "session_hash", None))
            return gr.skip() if n else message_html("Nothing to cancel.", error=False)

        upload.upload(show_upload, upload, [preview, use_example, message], concurrency_limit=None)
        upload.clear(lambda: (None, False), None, [preview, use_example], concurrency_limit=None)
        example_btn.click(show_example, None, [upload, preview, use_example, message], concurrency_limit=None)
        randomize.click(draw_seed, None, seed, concurrency_limit=None)
        page.load(initial_preview, use_example, preview, concurrency_limit=None)
        # The service queues and orders the jobs; Gradio only holds the waiting connections.
        generate.click(run, {upload, use_example, width, height, frames, steps, motion, fps, noise, chunk, seed,
                             *extra.values()},
                       [status, message, video, download, sidecar, preview, seed],
                       concurrency_limit=service.max_queue + 2, show_progress="hidden")
        cancel.click(cancel_mine, None, message, concurrency_limit=None)
        register_api(service, info)
    return page
