"""scripts/ascend_smoke.sh --dry_run (tests/ascend/smoke.py on this CPU host through the kernel
contract doubles): every case passes and the pasteable JSON line is there."""
import json
import os
import subprocess
import sys

from conftest import REFERENCE, ROOT


def test_smoke_dry_run_passes():
    env = dict(os.environ, PYTHON=sys.executable, SVD_MS_REFERENCE=REFERENCE)
    proc = subprocess.run(["bash", os.path.join(ROOT, "scripts", "ascend_smoke.sh"), "--dry_run"], env=env,
                          capture_output=True, text=True, timeout=900)
    lines = proc.stdout.splitlines()
    print("\n".join(line for line in lines if line.startswith(("PASS", "FAIL"))))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert [line.split(":")[0] for line in lines if line.startswith(("PASS", "FAIL"))] == [
        "PASS tiny_svd O0", "PASS random weights 3x64x64"]
    summary = json.loads(lines[-1])
    assert summary["dry_run"] and all(case["pass"] for case in summary["ascend_smoke"])
    assert summary["ascend_smoke"][0]["max_abs"] <= 0.1
    assert "amp_level auto -> O2 on Ascend" in proc.stderr, "the random-weight step runs the Ascend default"
