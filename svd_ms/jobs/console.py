"""What a job says: progress lines on stdout, warnings and errors as one line each on stderr."""
import os
import sys


def log(msg: str) -> None:
    print(msg, flush=True)


def warn(msg: str) -> None:
    print(f"warning: {msg}", file=sys.stderr, flush=True)


def report_error(msg: str) -> None:
    print(f"error: {msg}", file=sys.stderr, flush=True)


def debug_enabled() -> bool:
    """SVD_DEBUG=1: print tracebacks under the one-line errors."""
    return os.environ.get("SVD_DEBUG", "") not in ("", "0")
