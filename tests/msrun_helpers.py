"""Running `msrun` from tests: 2 local workers, a free port, a timeout, and no process left behind."""
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MSRUN = shutil.which("msrun") or str(Path(sys.executable).with_name("msrun"))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_msrun(script_args, log_dir: Path, timeout: float, workers: int = 2):
    """msrun `script_args` to completion; returns (exit code, launcher output, {worker log: text}).

    msrun starts its workers in sessions of their own, so they are tracked while it runs and
    each one still alive at the end (timeout included) is killed. msrun runs `python SCRIPT`,
    so this interpreter's folder goes first on PATH.
    """
    import psutil

    cmd = [MSRUN, f"--worker_num={workers}", f"--local_worker_num={workers}", f"--master_port={free_port()}",
           "--join=True", f"--log_dir={log_dir}"] + [str(a) for a in script_args]
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    launcher_log = Path(log_dir) / "launcher.txt"
    with open(launcher_log, "w") as f:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=f, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    seen = {}
    deadline = time.monotonic() + timeout
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            with contextlib.suppress(psutil.NoSuchProcess):
                for child in psutil.Process(proc.pid).children(recursive=True):
                    seen.setdefault(child.pid, child)
            time.sleep(0.5)
    finally:
        if proc.poll() is None:
            with contextlib.suppress(OSError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        for child in seen.values():
            with contextlib.suppress(psutil.Error):
                if child.is_running():
                    child.kill()
    timed_out = time.monotonic() >= deadline
    launcher = launcher_log.read_text(errors="replace")
    assert not timed_out, f"msrun ran past {timeout} s\n{launcher[-2000:]}"
    logs = {p.name: p.read_text(errors="replace") for p in sorted(Path(log_dir).glob("*.log"))}
    return proc.returncode, launcher, logs
