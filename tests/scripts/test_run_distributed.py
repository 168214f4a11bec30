"""scripts/run_distributed.sh: the msrun launcher's command line and refusals (msrun itself is
replaced by `echo`, so nothing starts), and the files its comments point readers to exist."""
import os
import re
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPTS = os.path.join(ROOT, "scripts")


def launch(*args):
    env = dict(os.environ, MSRUN="echo")
    return subprocess.run(["bash", os.path.join(SCRIPTS, "run_distributed.sh"), *args], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=60, check=False)


def test_builds_the_msrun_command_line(tmp_path):
    res = launch("--worker_num=2", f"--log_dir={tmp_path / 'logs'}", "--", "--device_target=CPU", "--image=a.png")
    assert res.returncode == 0, res.stderr
    line = res.stdout.strip().splitlines()[-1].split()
    assert line[:7] == ["--worker_num=2", "--local_worker_num=2", "--master_addr=127.0.0.1", "--master_port=8118",
                        "--node_rank=0", f"--log_dir={tmp_path / 'logs'}", "--cluster_time_out=600"]
    assert line[7:] == ["--join=True", os.path.join(ROOT, "image_to_video.py"), "--device_target=CPU",
                        "--image=a.png"]


@pytest.mark.parametrize("args, needle", [
    (("--worker_num=x", "--", "--image=a"), "--worker_num must be a non-negative integer"),
    (("--worker_num=2", "--local_worker_num=3", "--", "--image=a"), "--local_worker_num"),
    (("--bogus", "--", "--image=a"), "unknown option '--bogus'"),
    (("--worker_num=2",), "no image_to_video.py flags"),
])
def test_refusals_are_one_line_and_exit_2(args, needle):
    res = launch(*args)
    assert res.returncode == 2 and needle in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_paths_named_in_the_scripts_exist():
    missing = []
    for name in sorted(os.listdir(SCRIPTS)):
        with open(os.path.join(SCRIPTS, name), encoding="utf-8") as f:
            text = f.read()
        for path in re.findall(r"\b((?:tests|scripts|benchmarks|docs|svd_ms|svd_tools)/[\w./-]+\.(?:py|sh|md))", text):
            if not os.path.exists(os.path.join(ROOT, path)):
                missing.append(f"scripts/{name} names {path}")
    assert not missing, missing
