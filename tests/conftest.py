"""Shared test fixtures. The upstream reference lives in ../shared/reference (override with
SVD_MS_REFERENCE); tests fail, not skip, when it is missing."""
import os

import numpy as np
import pytest
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

REFERENCE = os.environ.get("SVD_MS_REFERENCE", os.path.join(ROOT, "..", "shared", "reference"))
TINY_CONFIG = os.path.join(REFERENCE, "tiny_svd.sgm.yaml")
TINY_WEIGHTS = os.path.join(REFERENCE, "tiny_svd.safetensors")
TINY_IMAGE = os.path.join(REFERENCE, "tiny_svd.input.png")


def pytest_configure(config):
    from svd_ms.runtime import setup_device
    # One device selection for the whole session: the CLI tests re-select CPU in-process
    # after other tests have already run kernels.
    setup_device("CPU", mode=1)


@pytest.fixture(scope="session")
def reference():
    path = os.path.join(REFERENCE, "tiny_svd.reference.npz")
    assert os.path.isfile(path), f"upstream reference missing: {path}"
    return dict(np.load(path))


def assert_within_scale_units(label, ours, truth, torch_f32, bound):
    """max |ours - truth| <= bound units of float32 eps x max |truth| (the result's scale), with
    PyTorch float32's own error (`torch_f32` against the same float64 `truth`) printed beside."""
    unit = np.finfo(np.float32).eps * np.abs(truth).max()
    err, torch_err = np.abs(ours - truth).max() / unit, np.abs(torch_f32 - truth).max() / unit
    print(f"[parity] {label}: max error {err:.2f} units of its scale, torch float32 {torch_err:.2f} | bound <= {bound}")
    assert err <= bound


def assert_kernel_in_inference_only(name, layer, inputs, rel=1e-5):
    """`layer` (a cell holding a CPU kernel in `.kernel`) calls the kernel in inference and not in
    training, where its composed path gives the same values within `rel`."""
    import mindspore as ms
    tensors = [ms.Tensor(a) for a in inputs]
    expected = layer(*tensors).asnumpy()

    def refuse(*args):
        raise AssertionError("kernel used while training")
    kernel, layer.kernel = layer.kernel, refuse
    try:
        layer.set_train(True)
        trained = layer(*tensors).asnumpy()
        layer.set_train(False)
        with pytest.raises(AssertionError, match="kernel used"):
            layer(*tensors)
    finally:
        layer.kernel = kernel
        layer.set_train(False)
    assert_close(f"{name}, training (composed) vs inference (kernel)", trained, expected, rel=rel)


def assert_close(name, actual, expected, rel=None, max_abs=None, mean_abs=None):
    """Compare to an upstream array and print the error next to its bound.

    rel: bound on max|a - e| / max|e|; max_abs / mean_abs: absolute bounds.
    """
    actual = np.asarray(actual, np.float64)
    expected = np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, f"{name}: shape {actual.shape} != reference {expected.shape}"
    err = np.abs(actual - expected)
    scale = max(np.abs(expected).max(), 1e-12)
    line = f"[parity] {name}: max_abs={err.max():.3e} mean_abs={err.mean():.3e} rel={err.max() / scale:.3e}"
    checks = []
    if rel is not None:
        checks.append(("rel", err.max() / scale, rel))
    if max_abs is not None:
        checks.append(("max_abs", err.max(), max_abs))
    if mean_abs is not None:
        checks.append(("mean_abs", err.mean(), mean_abs))
    line += " | bounds: " + ", ".join(f"{k}<={b:.1e}" for k, _, b in checks)
    print(line)
    for kind, value, bound in checks:
        assert np.isfinite(value) and value <= bound, f"{name}: {kind} {value:.3e} exceeds bound {bound:.1e}"


@pytest.fixture
def img(tmp_path):
    """make(name, size, mode, color, **save) -> the path of a small asymmetric test picture."""
    def make(name="photo.png", size=(384, 256), mode="RGB", color=(200, 120, 40), **save):
        p = tmp_path / "in" / name
        p.parent.mkdir(exist_ok=True)
        im = Image.new("RGB", size, color)
        im.paste((10, 200, 90), (0, 0, size[0] // 2, size[1] // 3))  # something asymmetric
        if mode != "RGB":
            im = im.convert(mode)
        im.save(p, **save)
        return p
    return make


@pytest.fixture(scope="module", autouse=True)
def _release_models_after_module():
    """Give back the memory of the models a test module built (its pipelines are dropped with the
    module's fixtures): MindSpore keeps the runtime memory of a dropped graph-mode model cached until
    asked (measured on the tiny model: 1.7 GB kept per dropped pipeline, 0.2-0.35 GB with the recycle),
    which pushed the one-process suite towards the machine's 24 GB."""
    yield
    import gc

    from svd_ms.runtime.memory import release_cached_memory
    release_cached_memory()
    # What is alive now (modules, session fixtures, caches: a million objects by the suite's end)
    # mostly lives on: leave it out of the collector's full passes, which otherwise rescan all of
    # it a few hundred times (200 s of the suite, measured with gc.callbacks). A frozen object
    # that later dies in a reference cycle is not collected; no model is alive here to do so.
    gc.freeze()
