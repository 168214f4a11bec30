"""The page's events: each tab's form turned into a service Request, the job followed until it
ends (queue position, progress, live preview, finished clips), cancel, and the history's "use these
settings again". Every event has a stable `api_name` (generate_image_to_video, generate_orbit,
generate_video_to_video, cancel_mine, ...), apart from the script endpoints of svd_ms.app.api
(/image_to_video, /status, /cancel), which take the short names."""
from typing import Any, Dict, List

from ..errors import ParamError, SVDError, one_line
from ..seeds import draw_seed
from .forms import CONFIG_DEFAULT, as_int, form_overrides, message_html, page_words, status_html
from .history import gallery_items, pick, settings_of
from .runs import IMAGE_TO_VIDEO, ORBIT, VIDEO_TO_VIDEO
from .service import CANCELLED, DONE, FAILED, Request
from .tabs import (PRESETS, camera_from_table, default_camera, draw_camera_path, lora_picks, lora_table,
                   orbit_input)
from .uploads import check_upload, check_video_upload, prepare_upload

POLL_S = 0.25
PREVIEW_SIDE = 512
RESULT_KEYS = ("status", "message", "live", "clips", "video", "download", "sidecar", "seed", "preview", "cutout",
               "history")
FORM_KEYS = ("frames", "steps", "seed", "motion", "fps", "noise", "chunk", "lora")
# What "use these settings again" sets, in this order, then the sampler options.
USE_AGAIN_KEYS = ("tabs", "frames", "steps", "seed", "motion", "fps", "noise", "chunk", "width", "height", "num_clips",
                  "strength", "keep_background", "view_size", "camera", "lora", "message")


def show_camera(table):
    """The camera table drawn as a path, or the table's mistake in one line."""
    try:
        return draw_camera_path(camera_from_table(table)), ""
    except ParamError as exc:
        return None, message_html(one_line(exc))


def preset_values(name):
    """(steps, sampler) of a named preset; anything else leaves both as they are."""
    chosen = PRESETS.get(name)
    if chosen is None:
        import gradio as gr
        return gr.skip(), gr.skip()
    return chosen["steps"], chosen["sampler"] or CONFIG_DEFAULT


class PageEvents:
    def __init__(self, service, info, ui: Dict[str, Any]):
        self.service, self.info, self.ui = service, info, ui

    # ---- requests from each tab -------------------------------------------------------------
    def _common(self, v: Dict[str, Any]) -> Dict[str, Any]:
        overrides = form_overrides(v["frames"], v["steps"], v["motion"], v["fps"], v["noise"], v["chunk"], v["extra"])
        return {"overrides": overrides, "lora": lora_picks(v["lora"]) if self.info.capabilities.lora else []}

    def image_request(self, v: Dict[str, Any]):
        path, selected = v["upload"], v["use_example"]
        example = self.info.example_image
        if path is None and not (selected and example):
            raise SVDError("no image: upload one" + (" or use the bundled example" if example else ""))
        img, image_info = check_upload(path if path is not None else example, self.info.limits)
        want_h, want_w = as_int("height", v["height"]) or None, as_int("width", v["width"]) or None
        array, image_info, warnings = prepare_upload(img, image_info, want_h, want_w, image_info["path"])
        common = self._common(v)
        clips = as_int("num_clips", v["num_clips"]) or 1
        if clips != 1:
            common["overrides"]["num_clips"] = clips
        req = Request(array, 0, image_info=image_info, height=want_h, width=want_w, kind=IMAGE_TO_VIDEO, **common)
        return req, warnings, {"preview": _pil(array)}

    def orbit_request(self, v: Dict[str, Any]):
        if v["orbit_upload"] is None:
            raise SVDError("no image: upload the object's picture")
        side = as_int("view size", v["view_size"]) or None
        pixels, image_info, warnings = orbit_input(v["orbit_upload"], self.info.limits, v["keep_background"], side)
        camera = camera_from_table(v["camera"]) if self.info.capabilities.camera else None
        req = Request(pixels, 0, image_info=image_info, height=side, width=side, kind=ORBIT, camera=camera,
                      keep_background=bool(v["keep_background"]), **self._common(v))
        return req, warnings, {"cutout": pixels}

    def video_request(self, v: Dict[str, Any]):
        if v["video_upload"] is None:
            raise SVDError("no video: upload a clip")
        video_info = check_video_upload(v["video_upload"], self.info.limits)
        common = self._common(v)
        common["overrides"]["strength"] = float(v["strength"])
        req = Request(None, 0, video=v["video_upload"], video_info=video_info, kind=VIDEO_TO_VIDEO, **common)
        return req, [], {}

    # ---- following a job --------------------------------------------------------------------
    def run(self, make_request, values: Dict[Any, Any], request):
        """Submit the tab's request and follow it: a generator of {component: update}."""
        import gradio as gr

        ui, service = self.ui, self.service
        out_components = [ui[k] for k in RESULT_KEYS]
        outputs = dict.fromkeys(out_components, gr.skip())
        v = run_values(values, ui)
        owner = getattr(request, "session_hash", None)
        try:
            req, warnings, shown = make_request(v)
            seed = as_int("seed", v["seed"])
            if seed is None:
                seed = draw_seed()
                outputs[ui["seed"]] = seed
            req.seed, req.owner = seed, owner
            job = service.submit(req)
        except SVDError as exc:
            outputs.update({ui["status"]: status_html("Not started."), ui["message"]: message_html(one_line(exc))})
            yield outputs
            return
        outputs.update({ui[k]: value for k, value in shown.items()})
        outputs.update({ui["video"]: None, ui["sidecar"]: None, ui["live"]: None, ui["clips"]: [],
                        ui["download"]: gr.update(visible=False, value=None),
                        ui["message"]: message_html("; ".join(page_words(w) for w in warnings), error=False)})
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
                now = (text, done, job.preview_count, len(job.clips))
                if now != last:
                    if last is None or now[2] != last[2]:
                        outputs[ui["live"]] = job.preview
                    if last is not None and now[3] != last[3]:
                        outputs[ui["clips"]] = [str(p) for p in job.clips]
                    last = now
                    outputs[ui["status"]] = status_html(text, done, total)
                    yield outputs
                    outputs = dict.fromkeys(out_components, gr.skip())
        except GeneratorExit:  # the visitor left: free the device for the others
            service.cancel(job)
            raise
        yield self._ended(job, outputs, owner)

    def _ended(self, job, outputs, owner):
        import gradio as gr

        ui = self.ui
        if job.state == DONE:
            r = job.record
            outputs.update({
                ui["status"]: status_html(f"Done in {job.finished - job.started:.1f} s: {r['frames']} frames of "
                                          f"{r['width']}x{r['height']} at {r['fps']} fps"
                                          + (" [UNTRAINED]" if self.info.untrained else ""),
                                          job.progress.total, job.progress.total),
                ui["video"]: str(job.video_path), ui["sidecar"]: r, ui["live"]: job.preview,
                ui["clips"]: [str(p) for p in job.clips],
                ui["download"]: gr.update(value=str(job.video_path), visible=True),
                ui["history"]: gallery_items(self._history(owner))})
        elif job.state == CANCELLED:
            outputs.update({ui["status"]: status_html("Cancelled."), ui["message"]: message_html("")})
        elif job.state == FAILED:
            outputs.update({ui["status"]: status_html("Failed."), ui["message"]: message_html(job.error or "failed")})
        return outputs

    def _history(self, owner):
        return self.service.history(None if self.info.shared_history else owner)

    # ---- small events -----------------------------------------------------------------------
    def cancel_mine(self, request):
        import gradio as gr
        n = self.service.cancel_owner(getattr(request, "session_hash", None))
        return gr.skip() if n else message_html("Nothing to cancel.", error=False)

    def show_upload(self, path):
        if path is None:
            return None, False, ""
        try:
            img, _ = check_upload(path, self.info.limits)
        except SVDError as exc:
            return None, False, message_html(one_line(exc))
        return thumbnail_of(img), False, ""

    def show_cutout(self, path, keep_background, view_size):
        if path is None:
            return None, ""
        try:
            pixels, _, warnings = orbit_input(path, self.info.limits, keep_background, as_int("view size", view_size)
                                              or None)
        except SVDError as exc:
            return None, message_html(one_line(exc))
        return pixels, message_html("; ".join(warnings), error=False)

    def recut(self, path, keep_background, view_size):
        if path is None:
            import gradio as gr
            return gr.skip(), gr.skip()
        return self.show_cutout(path, keep_background, view_size)

    def use_again(self, index, request):
        """The picked result's settings back in the form (uploads must be given again)."""
        import gradio as gr

        job = pick(self._history(getattr(request, "session_hash", None)), index)
        if job is None:
            return [gr.skip()] * (len(USE_AGAIN_KEYS) - 1) + [message_html("Pick a result first.")] + \
                [gr.skip()] * len(self.ui["extra"])
        return use_again_values(self.service.pipeline, self.info, self.ui, job)

    # ---- wiring -----------------------------------------------------------------------------
    def wire(self, page) -> None:
        import gradio as gr

        ui, service = self.ui, self.service
        shared = {ui[k] for k in FORM_KEYS} | set(ui["extra"].values())
        results = [ui[k] for k in RESULT_KEYS]
        limit = service.max_queue + 2  # the service queues and orders the jobs; Gradio holds the connections

        def runner(make_request, name):
            def handler(values: Dict[Any, Any], request: gr.Request):
                yield from self.run(make_request, values, request)
            handler.__name__ = name
            return handler

        ui["generate"].click(runner(self.image_request, "image_to_video"),
                             shared | {ui[k] for k in ("upload", "use_example", "width", "height", "num_clips")},
                             results, concurrency_limit=limit, show_progress="hidden",
                             api_name="generate_image_to_video")
        ui["orbit_generate"].click(runner(self.orbit_request, "orbit"),
                                   shared | {ui[k] for k in ("orbit_upload", "keep_background", "view_size",
                                                             "camera")},
                                   results, concurrency_limit=limit, show_progress="hidden",
                                   api_name="generate_orbit")
        ui["video_generate"].click(runner(self.video_request, "video_to_video"),
                                   shared | {ui["video_upload"], ui["strength"]}, results, concurrency_limit=limit,
                                   show_progress="hidden", api_name="generate_video_to_video")
        def cancel(request: gr.Request):
            return self.cancel_mine(request)

        def history(request: gr.Request):
            return gallery_items(self._history(getattr(request, "session_hash", None)))

        def picked(evt: gr.SelectData, request: gr.Request):
            return self.picked(evt, request)

        def use_again(index, request: gr.Request):
            return self.use_again(index, request)

        ui["cancel"].click(cancel, None, ui["message"], concurrency_limit=None, api_name="cancel_mine")
        ui["upload"].upload(self.show_upload, ui["upload"], [ui["preview"], ui["use_example"], ui["message"]],
                            concurrency_limit=None, api_name="check_image")
        ui["upload"].clear(lambda: (None, False), None, [ui["preview"], ui["use_example"]], concurrency_limit=None,
                           api_name="clear_image")
        ui["example_btn"].click(self.show_example, None,
                                [ui["upload"], ui["preview"], ui["use_example"], ui["message"]],
                                concurrency_limit=None, api_name="use_example")
        ui["randomize"].click(draw_seed, None, ui["seed"], concurrency_limit=None, api_name="random_seed")
        ui["preset"].change(preset_values, ui["preset"], [ui["steps"], ui["extra"]["sampler"]], concurrency_limit=None,
                            api_name="preset")
        cutout_inputs = [ui["orbit_upload"], ui["keep_background"], ui["view_size"]]
        # The file's change (set, replaced, cleared), not its upload event; and the checkbox without a
        # file leaves the cut-out alone: a late empty answer must not wipe the picture's cut-out
        # (CI once saw the cut-out never appear when the box was ticked just before the upload).
        ui["orbit_upload"].change(self.show_cutout, cutout_inputs, [ui["cutout"], ui["message"]],
                                  concurrency_limit=2, api_name="show_cutout")
        ui["keep_background"].change(self.recut, cutout_inputs, [ui["cutout"], ui["message"]],
                                     concurrency_limit=2, api_name="recut")
        ui["camera"].change(show_camera, ui["camera"], [ui["camera_plot"], ui["message"]],
                            concurrency_limit=None, api_name="draw_camera")
        page.load(self.initial_preview, ui["use_example"], ui["preview"], concurrency_limit=None,
                  api_name="initial_preview")
        page.load(history, None, ui["history"], concurrency_limit=None, api_name="load_history")
        ui["history_refresh"].click(history, None, ui["history"], concurrency_limit=None, api_name="history")
        ui["history"].select(picked, None, [ui["picked"], ui["history_settings"], ui["history_download"]],
                             concurrency_limit=None, api_name="pick_history")
        ui["history_use"].click(use_again, ui["picked"], [ui[k] for k in USE_AGAIN_KEYS] + list(ui["extra"].values()),
                                concurrency_limit=None, api_name="use_again")

    def show_example(self):
        img, _ = check_upload(self.info.example_image, self.info.limits)
        return None, thumbnail_of(img), True, ""

    def initial_preview(self, selected):
        if not selected or self.info.example_image is None:
            return None
        return thumbnail_of(check_upload(self.info.example_image, self.info.limits)[0])

    def picked(self, evt, request):
        import gradio as gr
        job = pick(self._history(getattr(request, "session_hash", None)), evt.index)
        if job is None:
            return None, None, gr.update(visible=False)
        return evt.index, job.record, gr.update(value=str(job.video_path), visible=True)


def use_again_values(pipeline, info, ui: Dict[str, Any], job) -> List[Any]:
    """The page values of USE_AGAIN_KEYS and the sampler options that make `job`'s result again."""
    import gradio as gr

    s = settings_of(job)
    params = pipeline.call_params(**job.request.overrides)
    d = pipeline.resolve(params)
    side = s["height"] if s["kind"] == ORBIT else None
    values: List[Any] = [
        gr.Tabs(selected=s["kind"]), d["num_frames"], d["num_steps"], s["seed"], params.motion_bucket_id, params.fps,
        d.get("noise_aug_strength", params.noise_aug_strength), s.get("decode_chunk_size") or 0,
        s["width"] if s["kind"] == IMAGE_TO_VIDEO else gr.skip(),
        s["height"] if s["kind"] == IMAGE_TO_VIDEO else gr.skip(), s.get("num_clips") or 1,
        s.get("strength") or gr.skip(), s["keep_background"], side,
        default_camera(d["num_frames"]) if not s["camera"] else
        [[e, a] for e, a in zip(s["camera"]["elevations_deg"], s["camera"]["azimuths_deg"])],
        lora_table(info.lora_names, s["lora"]) if info.capabilities.lora else gr.skip(),
        message_html("Settings restored; upload the input again to make this result.", error=False)]
    for name in ui["extra"]:
        value = s.get(name)
        values.append(CONFIG_DEFAULT if value is None and name in ("sampler", "guider") else
                      "" if value is None and name.endswith("guidance_scale") else
                      gr.skip() if value is None else value)
    return values


def run_values(values: Dict[Any, Any], ui: Dict[str, Any]) -> Dict[str, Any]:
    """{component: value} of an event as {name: value} (the shared settings and the sampler options)."""
    named = {name: values[c] for name, c in ui.items() if not isinstance(c, dict) and c in values}
    named["extra"] = {name: values[c] for name, c in ui["extra"].items() if c in values}
    return named


def thumbnail_of(img):
    img = img.copy()
    img.thumbnail((PREVIEW_SIDE, PREVIEW_SIDE))
    return img


def _pil(array):
    from PIL import Image
    return Image.fromarray(array)
