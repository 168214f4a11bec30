"""svd_ms.jobs.console: progress on stdout, one-line warnings and errors on stderr, SVD_DEBUG."""
from svd_ms.jobs import console


def test_lines(capsys):
    console.log("made it")
    console.warn("careful")
    console.report_error("broken")
    out, err = capsys.readouterr()
    assert out == "made it\n" and err == "warning: careful\nerror: broken\n"


def test_debug_switch(monkeypatch):
    for value, on in (("", False), ("0", False), ("1", True), ("yes", True)):
        monkeypatch.setenv("SVD_DEBUG", value)
        assert console.debug_enabled() is on
    monkeypatch.delenv("SVD_DEBUG")
    assert console.debug_enabled() is False
