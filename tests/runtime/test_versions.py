"""svd_ms.runtime.versions: the versions recorded with every result."""
import importlib
import platform
import subprocess

import mindspore
import numpy as np

from svd_ms.runtime.versions import REPO_DIR, versions

versions_module = importlib.import_module("svd_ms.runtime.versions")  # the package re-exports the function


def test_versions_name_what_shapes_a_result():
    v = versions()
    assert v["python"] == platform.python_version() and v["platform"] == platform.platform()
    assert v["mindspore"] == mindspore.__version__ and v["numpy"] == np.__version__
    for name in ("mindone", "pillow", "imageio", "imageio-ffmpeg", "jsonargparse", "svd_ms", "git_commit"):
        assert name in v


def test_git_commit_is_the_checkouts():
    head = subprocess.run(["git", "-C", str(REPO_DIR), "rev-parse", "HEAD"], capture_output=True, text=True, check=False)
    v = versions()
    if head.returncode != 0:  # an unpacked release without .git: recorded as unknown, not invented
        assert v["git_commit"] is None and "git_dirty" not in v
        return
    assert v["git_commit"] == head.stdout.strip()
    dirty = subprocess.run(["git", "-C", str(REPO_DIR), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True, check=False).stdout.strip()
    assert v["git_dirty"] is bool(dirty)


def test_absent_package_and_git_are_recorded_as_none(monkeypatch):
    monkeypatch.setattr(versions_module, "_PACKAGES", (("no_such_module_xyz", "no-such-package"),))
    monkeypatch.setattr(versions_module, "_git", lambda *args: None)
    v = versions()
    assert v["no-such-package"] is None
    assert v["git_commit"] is None and "git_dirty" not in v
