"""A Hugging Face model id resolved in the local cache, offline (svd_ms/hub.py)."""
import os
import socket
import time

import pytest

from svd_ms import hub
from svd_ms.errors import CheckpointError

OLD, NEW = "1" * 40, "2" * 40


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty cache named by HF_HUB_CACHE, and no network: any socket is a test failure."""
    for name in ("HF_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))

    def no_network(*args, **kwargs):
        raise AssertionError("the cache lookup opened a socket")
    monkeypatch.setattr(socket, "socket", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    return tmp_path / "hub"


def snapshot(cache, model_id, revision, marker=True, age=0.0):
    folder = cache / ("models--" + model_id.replace("/", "--")) / "snapshots" / revision
    folder.mkdir(parents=True)
    if marker:
        (folder / "model_index.json").write_text("{}")
    stamp = time.time() - age
    os.utime(folder, (stamp, stamp))
    return str(folder)


def test_cache_folder_follows_the_environment(tmp_path, monkeypatch):
    for name in ("HF_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert hub.cache_dir() == str(tmp_path / "home" / ".cache" / "huggingface" / "hub")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert hub.cache_dir() == str(tmp_path / "xdg" / "huggingface" / "hub")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    assert hub.cache_dir() == str(tmp_path / "hf" / "hub")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "direct"))
    assert hub.cache_dir() == str(tmp_path / "direct")


@pytest.mark.parametrize("text,ok", [
    ("stabilityai/stable-video-diffusion-img2vid-xt", True), ("acme/svd_1.1", True),
    ("svd_xt", False), ("a/b/c", False), ("../etc", False), ("acme/..", False), ("acme--x/y", False),
    ("/abs/path", False), ("./rel", False), ("acme/x.git", False), ("acme/" + "x" * 96, False), (None, False),
])
def test_model_id_shape(text, ok):
    assert hub.is_model_id(text) is ok


def test_refs_main_wins_then_the_newest_snapshot(cache):
    model_id = "acme/tiny-svd"
    old = snapshot(cache, model_id, OLD, age=100)
    new = snapshot(cache, model_id, NEW)
    snapshot(cache, model_id, "3" * 40, marker=False)  # newest, but not a diffusers pipeline
    assert hub.snapshot_folder(model_id) == new
    refs = cache / "models--acme--tiny-svd" / "refs"
    refs.mkdir()
    (refs / "main").write_text(OLD)  # what diffusers would load
    assert hub.snapshot_folder(model_id) == old
    assert hub.resolve_checkpoint(model_id) == old


def test_paths_and_other_text_pass_through(cache, tmp_path, monkeypatch):
    existing = tmp_path / "acme"
    assert hub.resolve_checkpoint(str(existing)) == str(existing)  # not an id: left to the format check
    local = tmp_path / "work"
    (local / "acme" / "tiny").mkdir(parents=True)
    monkeypatch.chdir(local)
    assert hub.resolve_checkpoint("acme/tiny") == "acme/tiny"  # an existing relative path wins over an id
    assert hub.resolve_checkpoint(None) is None


def test_missing_model_says_where_it_looked_and_how_to_download(cache):
    with pytest.raises(CheckpointError) as info:
        hub.resolve_checkpoint("acme/absent")
    message = str(info.value)
    assert "\n" not in message and repr(str(cache)) in message
    assert "download it with: huggingface-cli download acme/absent" in message
    snapshot(cache, "acme/empty", OLD, marker=False)  # cached, but no pipeline folder in it
    with pytest.raises(CheckpointError, match=r"looked in .*models--acme--empty"):
        hub.resolve_checkpoint("acme/empty")


def test_checkpoint_setting_accepts_a_cached_id(cache):
    from svd_ms.errors import ParamError
    from svd_ms.params import SVDParams

    folder = snapshot(cache, "acme/tiny-svd", NEW)
    os.makedirs(os.path.join(folder, "unet"))
    assert SVDParams(config=None, checkpoint="acme/tiny-svd").checkpoint == "acme/tiny-svd"
    with pytest.raises(ParamError, match="huggingface-cli download acme/absent"):
        SVDParams(config=None, checkpoint="acme/absent")
