"""Shared helpers of tests/test_convert*.py: where the reference files are, and running the CLI."""
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REF = os.environ.get("SVD_REFERENCE_DIR", os.path.join(os.path.dirname(REPO), "shared", "reference"))
if not os.path.isdir(REF):
    REF = "/work/shared/reference"
TINY = os.path.join(REF, "tiny_svd.safetensors")
TINY_CONFIG = os.path.join(REF, "tiny_svd.sgm.yaml")
MANIFEST = os.path.join(REF, "manifest")

_EXPECTED = {}

_SHAPES_CODE = (
    "import json, sys; from svd_tools.convert import expected_shapes; "
    "print(json.dumps(expected_shapes(sys.argv[1])))"
)


def expected_shapes(config):
    """The engine's parameter names and shapes for a config, as the converter sees them.

    Computed in a separate interpreter and cached: building several full-size engines in one
    process was seen to accumulate gigabytes, and the test process should stay small.
    """
    import json

    config = str(config)
    if config not in _EXPECTED:
        env = dict(os.environ, PYTHONWARNINGS="ignore", GLOG_v="3")
        r = subprocess.run([sys.executable, "-c", _SHAPES_CODE, config], capture_output=True,
                           text=True, timeout=900, cwd=REPO, env=env)
        if r.returncode != 0:
            raise RuntimeError(f"engine_param_shapes({config}) failed:\n{r.stderr[-3000:]}")
        line = [ln for ln in r.stdout.splitlines() if ln.startswith("{")][-1]
        _EXPECTED[config] = {k: tuple(v) for k, v in json.loads(line).items()}
    return _EXPECTED[config]


def run_cli(*args, timeout=600):
    """Run the converter in a fresh interpreter from the repository root, as the README says."""
    env = dict(os.environ, PYTHONWARNINGS="ignore", GLOG_v="3")
    cmd = [sys.executable, "-m", "svd_tools.convert"] + [str(a) for a in args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO, env=env)


def converted_tiny(out_dir) -> str:
    """The tiny reference converted by svd_tools.convert (float16 kept, as upstream ships it):
    the path of the .ckpt."""
    from svd_tools.convert import convert

    convert(TINY, TINY_CONFIG, str(out_dir), log=lambda *a: None)
    return os.path.join(str(out_dir), "tiny_svd.ckpt")


def write_bf16_safetensors(path, state, metadata=None) -> str:
    """A bfloat16 .safetensors written by hand (numpy has no bfloat16): each float array rounded
    to its top 16 bits (round half up), in the layout the format defines."""
    import json
    import struct

    import numpy as np

    header, blobs, offset = {}, [], 0
    for key, value in state.items():
        bits = (np.ascontiguousarray(value, np.float32).view(np.uint32) + 0x8000) >> 16
        raw = bits.astype("<u2").tobytes()
        header[key] = {"dtype": "BF16", "shape": list(np.shape(value)), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    if metadata:
        header["__metadata__"] = metadata
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))
    return str(path)
