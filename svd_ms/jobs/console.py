"""What a job says: progress lines on stdout, warnings and errors as one line each on stderr."""
import argparse
import os
import signal
import sys
import traceback
from typing import Callable

from ..errors import SVDError, one_line

# What a job's process exits with: all done; some inputs failed; nothing could start (a bad flag,
# model or input); stopped by Ctrl-C or SIGTERM.
EXIT_OK, EXIT_FAILED, EXIT_SETUP, EXIT_INTERRUPTED = 0, 1, 2, 130


def log(msg: str) -> None:
    print(msg, flush=True)


def warn(msg: str) -> None:
    print(f"warning: {msg}", file=sys.stderr, flush=True)


def report_error(msg: str) -> None:
    print(f"error: {msg}", file=sys.stderr, flush=True)


def debug_enabled() -> bool:
    """SVD_DEBUG=1: print tracebacks under the one-line errors."""
    return os.environ.get("SVD_DEBUG", "") not in ("", "0")


def _terminate(signum, frame):
    raise KeyboardInterrupt  # schedulers send SIGTERM: stop like Ctrl-C, with a message and exit 130


def run_entry(body: Callable[[], int]) -> int:
    """Run an entry script's `body` the way every entry script ends: SIGTERM stops it like Ctrl-C
    (exit 130); a user mistake (SVDError, OSError, a bad flag) is one line on stderr and exit 2; anything
    else is one line too, with the traceback only under SVD_DEBUG=1. The SIGTERM handler is put back after."""
    try:
        previous = signal.signal(signal.SIGTERM, _terminate)
    except ValueError:  # not the main thread (an embedding application keeps its own handlers)
        previous = None
    try:
        return body()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    except argparse.ArgumentError as exc:
        report_error(f"{' '.join(str(exc).split())} (see --help)")
        return EXIT_SETUP
    except (SVDError, OSError) as exc:
        report_error(one_line(exc))
        if debug_enabled():
            traceback.print_exc()
        return EXIT_SETUP
    except Exception as exc:
        if debug_enabled():
            raise
        report_error(f"unexpected {one_line(exc)} (set SVD_DEBUG=1 for the traceback)")
        return EXIT_SETUP
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
