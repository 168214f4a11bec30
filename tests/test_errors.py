"""svd_ms.errors: the one error hierarchy, and `one_line`, which every tool prints after "error: "."""
import pytest

from svd_ms import errors as E
from svd_ms.errors import one_line


@pytest.mark.parametrize("error, bases", [
    (E.UsageError, (E.SVDError,)),
    (E.ParamError, (E.InputError, E.SVDError)),
    (E.ImageError, (E.InputError,)),
    (E.VideoError, (E.ImageError, E.InputError)),   # one bad video skips that input, like a bad image
    (E.CheckpointMismatchError, (E.CheckpointError,)),
    (E.CheckpointMemoryError, (E.CheckpointError,)),
    (E.LoRAError, (E.CheckpointError,)),
    (E.ConvertError, (E.SVDError,)),
    (E.NonFiniteError, (E.SVDError,)),
    (E.GenerationCancelled, (E.SVDError,)),
    (E.DataError, (E.SVDError,)),
    (E.ConfigError, (E.SVDError,)),
])
def test_every_user_error_is_an_svd_error(error, bases):
    assert all(issubclass(error, base) for base in bases)
    assert not issubclass(error, (ValueError, RuntimeError))  # callers catch ours, not the builtins


def test_param_error_names_its_field():
    err = E.ParamError("num_steps", "num_steps must be >= 1, got 0")
    assert err.field == "num_steps" and str(err) == "num_steps must be >= 1, got 0"


def test_our_errors_pass_unchanged():
    assert one_line(E.InputError("image 'a.png' is not a picture")) == "image 'a.png' is not a picture"


def test_framework_errors_are_cut_before_their_call_stacks():
    raw = RuntimeError("Out of memory on CPU.\n\n----------------------------------------------------\n"
                       "- C++ Call Stack: (For framework developers)\n-----\nmindspore/ccsrc/foo.cc:12 Bar")
    assert one_line(raw) == "RuntimeError: Out of memory on CPU."
    wrapped = ValueError("bad value\nTraceback (most recent call last):\n  File x")
    assert one_line(wrapped) == "ValueError: bad value"


def test_one_line_joins_lines_and_keeps_under_the_limit():
    assert one_line(OSError("disk\n  full")) == "OSError: disk full"
    long = one_line(RuntimeError("x" * 1000), limit=50)
    assert len(long) == 50 and long.endswith("...") and long.startswith("RuntimeError: xxx")
    assert one_line(E.UsageError("y" * 1000)) == "y" * 1000  # ours are written as one line already
    assert one_line(KeyError()) == "KeyError"
