"""svd_ms.background: background removal for SV3D inputs, offline only."""
import sys
import types

import pytest
from PIL import Image

from svd_ms.background import remove_background
from svd_ms.errors import InputError
from svd_ms.preparation import prepare_input


def test_rgb_without_rembg_is_refused(monkeypatch, tmp_path):
    rgb = Image.new("RGB", (96, 64), (10, 120, 30))
    monkeypatch.setitem(sys.modules, "rembg", None)  # not installed
    with pytest.raises(InputError) as info:
        prepare_input(rgb, orbit=True, height=64)
    message = str(info.value)
    assert "RGBA cut-out" in message and "keep_background" in message and "not installed" in message
    assert "\n" not in message

    # Installed but its model not on disk: refused before any session (and so any download).
    fake = types.ModuleType("rembg")
    fake.remove = lambda *a, **k: pytest.fail("rembg.remove must not run")
    u2net = types.ModuleType("rembg.sessions.u2net")
    u2net.U2netSession = type("U2netSession", (), {"__init__": lambda *a, **k: pytest.fail("no session")})
    monkeypatch.setitem(sys.modules, "rembg", fake)
    monkeypatch.setitem(sys.modules, "rembg.sessions", types.ModuleType("rembg.sessions"))
    monkeypatch.setitem(sys.modules, "rembg.sessions.u2net", u2net)
    monkeypatch.setenv("U2NET_HOME", str(tmp_path))
    with pytest.raises(InputError, match="is not on disk and is never downloaded"):
        remove_background(rgb, "image 'photo.png'")
