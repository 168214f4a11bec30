"""The page's history of this server's results (those still in --output_dir): a thumbnail and a
caption for each, and the settings of one result as page values, for "use these settings
again". By default a visitor sees the results of their own page session (another visitor's
videos do not leak into it); `--shared_history` shows every result of the server."""
from typing import Any, Dict, List, Optional, Tuple

from .runs import ORBIT, VIDEO_TO_VIDEO

KIND_WORDS = {"image_to_video": "image to video", ORBIT: "orbit", VIDEO_TO_VIDEO: "video to video"}


def caption(job) -> str:
    r = job.record
    clips = f", {r['clips']} clips" if r.get("clips", 1) > 1 else ""
    return (f"{KIND_WORDS.get(job.request.kind, job.request.kind)}: seed {r['seed']}, {r['frames']} frames "
            f"{r['width']}x{r['height']}, {r['pipeline'].get('num_steps') or r['resolved']['num_steps']} steps{clips}")


def gallery_items(jobs) -> List[Tuple[Any, str]]:
    """(thumbnail, caption) per finished job, in the order given (the service's: newest first)."""
    return [(job.thumbnail, caption(job)) for job in jobs if job.thumbnail is not None and job.record]


def settings_of(job) -> Dict[str, Any]:
    """The page values that make this result again: the request's form settings, by SVDParams
    field name (sampling settings), plus seed, size, kind, camera, keep_background and LoRA."""
    req = job.request
    values: Dict[str, Any] = dict(req.overrides)
    values.update(seed=req.seed, height=req.height, width=req.width, kind=req.kind, camera=req.camera,
                  keep_background=req.keep_background, lora=list(req.lora))
    return values


def pick(jobs, index: Optional[int]):
    """The job shown at gallery position `index`, or None."""
    shown = [job for job in jobs if job.thumbnail is not None and job.record]
    if index is None or not 0 <= index < len(shown):
        return None
    return shown[index]
