"""The page's form rules, without Gradio: numbers from the form (a fraction or an empty required
field is the visitor's mistake, named), the sampler/guidance/cache options (empty: the config's),
the per-request SVDParams overrides, and the status and message HTML (escaped)."""
import html
from typing import Any, Dict, Optional

from ..errors import ParamError

CONFIG_DEFAULT = "(the config's)"
CACHE_NUMBERS = ("cache_interval", "cache_branch")


def status_html(text: str, done: int = 0, total: int = 0) -> str:
    bar = f'<progress value="{done}" max="{max(total, 1)}"></progress>' if total else ""
    return f'<div class="svd-status">{bar}<div class="svd-status-text">{html.escape(text)}</div></div>'


def message_html(text: str = "", error: bool = True) -> str:
    if not text:
        return ""
    css = "svd-error" if error else "svd-note"
    return f'<div class="{css}" role="alert">{"Error: " if error else ""}{html.escape(text)}</div>'


def as_int(name: str, value) -> Optional[int]:
    """A page number as an int; a fraction is the visitor's mistake, reported by name."""
    if value is None or value == "":
        return None
    if isinstance(value, float):
        if not value.is_integer():
            raise ParamError(name, f"{name}={value} must be a whole number")
        value = int(value)
    return value


def page_words(note: str) -> str:
    """A note written for the CLI, in the page's words (its fields instead of flags)."""
    for flag, field in (("--width=", "width "), ("--height=", "height "), ("--width/--height", "width/height"),
                        ("--SVD.noise_aug_strength", "noise augmentation")):
        note = note.replace(flag, field)
    return note


def option_value(name: str, value):
    if isinstance(value, str):
        value = value.strip()
    if value in (None, "", CONFIG_DEFAULT):
        return None
    if name in CACHE_NUMBERS:
        return as_int(name, value)
    if name.endswith("guidance_scale"):
        try:
            return float(value)
        except ValueError:
            raise ParamError(name, f"{name} must be a number, got {value!r}") from None
    return value


def form_overrides(frames, steps, motion, fps, noise, chunk, extra: Dict[str, Any]) -> Dict[str, Any]:
    # An empty decode chunk arrives as 0 or None: both mean all frames at once.
    values = {"num_frames": as_int("num_frames", frames), "num_steps": as_int("num_steps", steps),
              "motion_bucket_id": as_int("motion_bucket_id", motion), "fps": as_int("fps", fps),
              "noise_aug_strength": noise, "decode_chunk_size": as_int("decode_chunk_size", chunk) or None}
    for key in ("motion_bucket_id", "fps", "noise_aug_strength"):
        if values[key] is None:
            raise ParamError(key, f"{key} is empty: give a value")
    for name, value in extra.items():
        value = option_value(name, value)
        if value is not None or name not in CACHE_NUMBERS:  # an emptied cache number keeps the default
            values[name] = value
    return values


