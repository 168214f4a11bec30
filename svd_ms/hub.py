"""A Hugging Face model id as a checkpoint: the model's folder in the local cache, offline.

`--SVD.checkpoint=stabilityai/stable-video-diffusion-img2vid-xt` names the snapshot an earlier
diffusers (or `huggingface-cli download`) run left in the cache. Nothing is downloaded here and
the network is never touched: a model that is not in the cache is a one-line error saying where
it was looked for and the command that downloads it.

The cache is where huggingface_hub puts it: `HF_HUB_CACHE`, else `HF_HOME/hub`, else
`XDG_CACHE_HOME/huggingface/hub`, else `~/.cache/huggingface/hub`, read from the environment at
each call (huggingface_hub reads it once, at import).
"""
import os
import re
from typing import List, Optional

from .errors import CheckpointError

# huggingface_hub's rule for a model id: "owner/name" of letters, digits, '-', '_', '.', at
# most 96 characters, no '--' or '..'. The rule also keeps the id from leaving the cache folder.
_MODEL_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
_REVISION = re.compile(r"[0-9a-f]{40}")
MARKER = "model_index.json"  # what makes a snapshot a diffusers pipeline folder


def cache_dir() -> str:
    """The Hugging Face hub cache folder the environment names."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.path.expanduser(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return os.path.join(os.path.expanduser(os.environ["HF_HOME"]), "hub")
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(xdg, "huggingface", "hub")


def is_model_id(text) -> bool:
    """Whether `text` has the shape of a Hugging Face model id ("owner/name")."""
    return (isinstance(text, str) and len(text) <= 96 and _MODEL_ID.fullmatch(text) is not None
            and "--" not in text and ".." not in text and not text.endswith(".git"))


def _repo_folder(model_id: str, cache: str) -> str:
    return os.path.join(cache, "models--" + model_id.replace("/", "--"))


def _snapshots(repo: str) -> List[str]:
    """The snapshot folders of a cached repository that hold a diffusers pipeline, newest first."""
    folder = os.path.join(repo, "snapshots")
    try:
        names = [n for n in os.listdir(folder) if _REVISION.fullmatch(n)]
    except OSError:
        return []
    found = [os.path.join(folder, n) for n in names if os.path.isfile(os.path.join(folder, n, MARKER))]
    return sorted(found, key=os.path.getmtime, reverse=True)


def _main_snapshot(model_id: str, cache: str) -> Optional[str]:
    """The snapshot `refs/main` points at (what diffusers would load), through huggingface_hub's
    own offline cache lookup when it is installed."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    try:
        found = try_to_load_from_cache(model_id, MARKER, cache_dir=cache)
    except Exception:  # an id huggingface_hub rejects, an unreadable ref: fall back to the listing
        return None
    return os.path.dirname(found) if isinstance(found, str) and os.path.isfile(found) else None


def snapshot_folder(model_id: str) -> str:
    """The local folder of `model_id`'s newest cached snapshot: the one `refs/main` names, else
    the most recently written one. A one-line CheckpointError when there is none."""
    cache = cache_dir()
    repo = _repo_folder(model_id, cache)
    found = _main_snapshot(model_id, cache) or next(iter(_snapshots(repo)), None)
    if found is None:
        where = repo if os.path.isdir(repo) else cache
        raise CheckpointError(
            f"checkpoint {model_id!r} is not a file or folder, and no diffusers snapshot of that Hugging Face model "
            f"is in the local cache (looked in {where!r}; set HF_HUB_CACHE or HF_HOME if the cache is elsewhere); "
            f"download it with: huggingface-cli download {model_id}")
    return found


def resolve_checkpoint(path):
    """`path` unchanged when it exists (or is not shaped like a model id), else the cached
    snapshot folder of the model id it names."""
    if path is None or os.path.exists(path) or not is_model_id(os.fspath(path)):
        return path
    return snapshot_folder(os.fspath(path))
