"""svd_ms.app.__main__ (`python -m svd_ms.app`): its flags end in one line, the page modules import
no model code, and the page's defaults are the pipeline's resolved ones."""
import subprocess
import sys
from types import SimpleNamespace

from conftest import ROOT
from svd_ms.app.__main__ import DEMO_CONFIG, main, page_info
from svd_ms.app.uploads import UploadLimits
from svd_ms.params import SVDParams


def test_page_modules_do_not_import_the_model():
    code = ("import sys, svd_ms.app.ui, svd_ms.app.service, svd_ms.app.uploads, svd_ms.app.__main__;"
            "bad = [m for m in sys.modules if m.startswith(('svd_ms.pipeline', 'svd_ms.models', 'svd_ms.modules'))];"
            "print(bad); sys.exit(1 if bad else 0)")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr


def test_bad_flags_end_in_one_line(capsys):
    assert main(["--SVD.fps=0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --SVD.fps=0") and "\n" not in err
    assert main(["--port=70000"]) == 2
    assert capsys.readouterr().err.strip() == "error: --port=70000 must be between 1 and 65535"
    assert main(["--lora_dir=/no/such/folder", "--device_target=CPU"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == "error: --lora_dir=/no/such/folder: not a folder"


def test_page_defaults_come_from_the_pipeline():
    from fake_pipeline import FakePipeline

    params = SVDParams(config=str(DEMO_CONFIG), fps=9)
    service = SimpleNamespace(pipeline=FakePipeline(params), untrained=True)
    info = page_info(service, params, "CPU", 1, UploadLimits(), None)
    assert (info.num_frames, info.num_steps, info.fps, info.noise_aug_strength) == (3, 2, 9, 0.02)
    assert info.untrained and "UNTRAINED" in info.title and "PyNative" in info.model_line
