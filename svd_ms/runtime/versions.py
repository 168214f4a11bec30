"""Versions of everything that shapes a result, recorded in every sidecar."""
import contextlib
import importlib
import platform
import subprocess
from pathlib import Path
from typing import Dict, Optional

REPO_DIR = Path(__file__).resolve().parents[2]
_PACKAGES = (("mindspore", "mindspore"), ("mindone", "mindone"), ("numpy", "numpy"), ("PIL", "pillow"),
             ("imageio", "imageio"), ("imageio_ffmpeg", "imageio-ffmpeg"), ("jsonargparse", "jsonargparse"),
             ("svd_ms", "svd_ms"))


def _git(*args) -> Optional[str]:
    with contextlib.suppress(Exception):
        res = subprocess.run(["git", "-C", str(REPO_DIR), *args], capture_output=True, text=True, timeout=5)
        if res.returncode == 0:
            return res.stdout.strip()
    return None


def versions() -> Dict[str, Optional[str]]:
    out: Dict[str, Optional[str]] = {"python": platform.python_version(), "platform": platform.platform()}
    for module, name in _PACKAGES:
        try:
            out[name] = str(getattr(importlib.import_module(module), "__version__", "unknown"))
        except Exception:
            out[name] = None
    with contextlib.suppress(Exception):
        import imageio_ffmpeg
        out["ffmpeg"] = imageio_ffmpeg.get_ffmpeg_version()
    out["git_commit"] = _git("rev-parse", "HEAD")
    if out["git_commit"] is not None:
        dirty = _git("status", "--porcelain", "--untracked-files=no")
        out["git_dirty"] = None if dirty is None else bool(dirty)
    return out
