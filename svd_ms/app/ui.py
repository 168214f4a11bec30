"""The page: Gradio components and their wiring to a GenerationService. No model code here; the
service owns the pipeline. One tab per kind of run the served model supports (image to video with
chained clips, orbit, video to video; svd_ms.app.capabilities), shared sampling settings with the
rarely changed ones folded away, LoRA adapters, one result panel and the history.

Element ids (#image-upload, #generate, #orbit-generate, #video-generate, #cancel, #status,
#message, #live-preview, #clips, #result-video, #download, #sidecar, #history-gallery, ...) are
part of the page's contract: the browser test drives the page through them. Every event has a
stable `api_name`.
"""
import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, Optional

from ..params import SVDParams
from ..seeds import SEED_MOD
from .api import register_api
from .capabilities import Capabilities
from .forms import CONFIG_DEFAULT, status_html
from .uploads import UploadLimits

SIZE_HELP = ("Multiple of 64 (64, 128, ..., 1024): the latents are 1/8 of the image and the UNet halves them "
             "three times. The image is scaled to cover width x height and its centre is cut out. Empty: the "
             "image's own size, each side brought down to a multiple of 64 (one empty side follows the aspect "
             "ratio); 0 counts as empty. The released models were trained at 1024 x 576.")
CSS = """
#untrained-banner {background: #fff3cd; border: 2px solid #d39e00; border-radius: 6px; padding: 4px 12px;}
#message .svd-error {color: #b00020; font-weight: 600;}
#status progress {width: 100%; height: 14px;}
"""
PLAIN_SVD = Capabilities(image_to_video=True, orbit=False, camera=False, video_to_video=True, chained=True,
                         fast_preset=False, lora=False)


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
    capabilities: Capabilities = PLAIN_SVD
    sampler: Optional[str] = None  # the server's --SVD.sampler (None: the config's)
    lora_names: tuple = ()
    shared_history: bool = False


def sampling_controls(info: PageInfo) -> Dict[str, Any]:
    """{SVDParams field name: component} for the sampler and guidance options; empty or
    CONFIG_DEFAULT values keep the model config's own. The sampler starts at the server's."""
    import gradio as gr

    from ..sampling_options import GUIDERS, SAMPLERS
    with gr.Row():
        controls = {
            "sampler": gr.Dropdown([CONFIG_DEFAULT, *SAMPLERS], value=info.sampler or CONFIG_DEFAULT,
                                   label="Sampler", elem_id="sampler",
                                   info="lcm: AnimateLCM's 4-step sampler (needs its weights)"),
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


def settings_panel(info: PageInfo) -> Dict[str, Any]:
    """The settings every kind of run shares, by name: frames, steps and seed in sight; motion,
    fps, noise, decode chunk, sampler, guidance and cache folded away; the LoRA picker."""
    import gradio as gr

    from .tabs import LORA_HEADERS, lora_rows
    c: Dict[str, Any] = {}
    with gr.Row():
        c["frames"] = gr.Number(label="Frames", value=info.num_frames, precision=0, elem_id="frames")
        c["steps"] = gr.Number(label="Sampling steps", value=info.num_steps, precision=0, elem_id="steps")
    with gr.Row():
        c["seed"] = gr.Number(label="Seed", value=42, precision=0, elem_id="seed", info=f"0 to {SEED_MOD - 1}")
        c["randomize"] = gr.Button("Random seed", size="sm", elem_id="randomize")
    with gr.Accordion("More settings", open=False, elem_id="more-settings"):
        with gr.Row():
            c["motion"] = gr.Slider(0, 255, value=info.motion_bucket_id, step=1, label="Motion bucket",
                                    info="0-255, more is more motion", elem_id="motion")
            c["fps"] = gr.Slider(1, 60, value=info.fps, step=1, label="Frames per second",
                                 info="Conditions the model and sets the playback rate", elem_id="fps")
        with gr.Row():
            c["noise"] = gr.Number(label="Noise augmentation", value=info.noise_aug_strength, step=0.01,
                                   info="Noise added to the conditioning image (cond_aug)", elem_id="noise")
            c["chunk"] = gr.Number(label="Decode chunk size", value=info.decode_chunk_size, precision=0,
                                   info="Frames decoded at once; 0 or empty: all. Lower saves memory", elem_id="chunk")
        c["extra"] = sampling_controls(info)
    with gr.Accordion("LoRA adapters", open=False, elem_id="lora-settings", visible=info.capabilities.lora):
        c["lora"] = gr.Dataframe(value=lora_rows(info.lora_names) or [["", 0.0]], headers=LORA_HEADERS,
                                 datatype=["str", "number"],
                                 col_count=(2, "fixed"), row_count=(max(1, len(info.lora_names)), "fixed"),
                                 static_columns=[0], interactive=True, elem_id="lora",
                                 label="Scale per adapter (0: not used); the files of the server's --lora_dir")
    return c


def build_page(service, info: PageInfo):
    import gradio as gr

    from .events import PageEvents
    caps = info.capabilities
    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                              font_mono=["ui-monospace", "monospace"])  # system fonts: nothing fetched
    with gr.Blocks(title=info.title, theme=theme, css=CSS, analytics_enabled=False,
                   delete_cache=(3600, 3600)) as page:
        gr.Markdown(f"# {info.title}\n{info.model_line}")
        if info.untrained:
            gr.Markdown("**UNTRAINED model: random weights.** This demo shows the whole path from image to "
                        "video; the video is noise. Serve real weights with `--SVD.checkpoint`.",
                        elem_id="untrained-banner")
        ui: Dict[str, Any] = {"use_example": gr.State(info.example_image is not None and caps.image_to_video),
                              "picked": gr.State(None)}
        with gr.Row():
            with gr.Column(scale=1):
                kinds = caps.kinds() or ["image_to_video"]
                with gr.Tabs(selected=kinds[0], elem_id="kinds") as ui["tabs"]:  # the first the model can do
                    _image_tab(ui, info)
                    _orbit_tab(ui, info)
                    _video_tab(ui, info)
                ui.update(settings_panel(info))
                ui["cancel"] = gr.Button("Cancel", variant="stop", elem_id="cancel")
            with gr.Column(scale=1):
                ui["status"] = gr.HTML(status_html("Ready."), elem_id="status")
                ui["message"] = gr.HTML("", elem_id="message")
                ui["live"] = gr.Image(label="Live preview (each step's denoised estimate)", type="numpy",
                                      interactive=False, height=160, elem_id="live-preview",
                                      show_download_button=False)
                ui["clips"] = gr.Gallery(label="Finished clips", visible=caps.chained, columns=4, height=160,
                                         elem_id="clips", interactive=False)
                ui["video"] = gr.Video(label="Result" + (" (UNTRAINED model)" if info.untrained else ""),
                                       interactive=False, autoplay=True, loop=True, elem_id="result-video")
                ui["download"] = gr.DownloadButton("Download the mp4", visible=False, elem_id="download")
                ui["sidecar"] = gr.JSON(label="Parameters used (the sidecar)", elem_id="sidecar")
        with gr.Accordion("History: this server's results", open=False, elem_id="history"):
            ui["history"] = gr.Gallery(label="Results", columns=6, height=200, elem_id="history-gallery",
                                       interactive=False, allow_preview=False)
            with gr.Row():
                ui["history_refresh"] = gr.Button("Refresh", size="sm", elem_id="history-refresh")
                ui["history_use"] = gr.Button("Use these settings again", size="sm", elem_id="history-use")
                ui["history_download"] = gr.DownloadButton("Download", size="sm", visible=False,
                                                           elem_id="history-download")
            ui["history_settings"] = gr.JSON(label="Settings of the picked result", elem_id="history-settings")
        PageEvents(service, info, ui).wire(page)
        register_api(service, info)
    return page


def _image_tab(ui: Dict[str, Any], info: PageInfo) -> None:
    import gradio as gr

    from .tabs import preset_choices
    caps = info.capabilities
    with gr.Tab("Image to video", id="image_to_video", visible=caps.image_to_video, elem_id="tab-image"):
        ui["upload"] = gr.File(label=f"Image (PNG, JPEG, WebP, ...; at most {info.limits.max_bytes / 2**20:.0f} MB "
                               f"and {info.limits.max_pixels / 1e6:.0f} megapixels)",
                               file_types=["image"], type="filepath", file_count="single", elem_id="image-upload")
        ui["example_btn"] = gr.Button("Use the bundled example image", size="sm", elem_id="use-example",
                                      visible=info.example_image is not None)
        ui["preview"] = gr.Image(label="Conditioning image", type="pil", interactive=False, height=220,
                                 elem_id="preview", show_download_button=False)
        with gr.Row():
            ui["width"] = gr.Number(label="Width", value=None, precision=0, step=64, elem_id="width", info=SIZE_HELP)
            ui["height"] = gr.Number(label="Height", value=None, precision=0, step=64, elem_id="height",
                                     info="Multiple of 64; see Width.")
        with gr.Row():
            ui["preset"] = gr.Radio(preset_choices(caps.fast_preset), value=None, label="Preset",
                                    elem_id="preset", info="Sets the steps and the sampler")
            ui["num_clips"] = gr.Number(label="Chained clips", value=1, precision=0, minimum=1, elem_id="num-clips",
                                        visible=caps.chained,
                                        info="More than 1: a longer video, each clip starting on the last frame "
                                             "of the one before")
        ui["generate"] = gr.Button("Generate", variant="primary", elem_id="generate")


def _orbit_tab(ui: Dict[str, Any], info: PageInfo) -> None:
    import gradio as gr

    from .tabs import CAMERA_HEADERS, default_camera, draw_camera_path
    caps = info.capabilities
    with gr.Tab("Orbit (SV3D)", id="orbit", visible=caps.orbit, elem_id="tab-orbit"):
        ui["orbit_upload"] = gr.File(label="Object image (a cut-out with transparency, or a picture)",
                                     file_types=["image"], type="filepath", file_count="single",
                                     elem_id="orbit-upload")
        with gr.Row():
            ui["keep_background"] = gr.Checkbox(label="Keep background", value=False, elem_id="keep-background",
                                                info="Use the picture as it is instead of cutting the object out")
            ui["view_size"] = gr.Number(label="View size", value=None, precision=0, step=64, elem_id="view-size",
                                        info="Side of the square views, a multiple of 64; empty: 576")
        ui["cutout"] = gr.Image(label="What the model will see", type="numpy", interactive=False, height=200,
                                elem_id="cutout", show_download_button=False)
        rows = default_camera(info.num_frames)
        with gr.Row(visible=caps.camera):
            ui["camera"] = gr.Dataframe(value=rows, headers=CAMERA_HEADERS, datatype=["number", "number"],
                                        col_count=(2, "fixed"), row_count=(len(rows), "dynamic"), interactive=True,
                                        elem_id="camera", label="Camera per view (one row per frame)")
            ui["camera_plot"] = gr.Image(value=draw_camera_path({"elevations_deg": [r[0] for r in rows],
                                                                 "azimuths_deg": [r[1] for r in rows]}),
                                         label="Camera path (top view; centre: looking down)", type="pil",
                                         interactive=False, height=280, elem_id="camera-plot",
                                         show_download_button=False)
        ui["orbit_generate"] = gr.Button("Make the orbit", variant="primary", elem_id="orbit-generate")


def _video_tab(ui: Dict[str, Any], info: PageInfo) -> None:
    import gradio as gr

    with gr.Tab("Video to video", id="video_to_video", visible=info.capabilities.video_to_video,
                elem_id="tab-video"):
        ui["video_upload"] = gr.File(label="Clip (mp4, webm, gif, ...): resampled to the frames asked for",
                                     file_types=["video", ".gif"], type="filepath", file_count="single",
                                     elem_id="video-upload")
        ui["strength"] = gr.Slider(0.05, 1.0, value=0.7, step=0.05, label="Strength", elem_id="strength",
                                   info="The share of the sampling redone: low keeps the clip, 1 ignores it")
        ui["video_generate"] = gr.Button("Restyle the clip", variant="primary", elem_id="video-generate")
