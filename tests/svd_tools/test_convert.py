"""svd_tools/convert.py on upstream-layout checkpoints: conversion, --dtype, and refusals."""
import importlib
import json
import os
import sys

import numpy as np
import pytest

import convert_helpers as H  # tests/ is on sys.path under pytest
from svd_tools.safetensors_stream import write_safetensors
from svd_ms.checkpoint import bf16_to_f32


def _engine_expected(config=None):
    return H.expected_shapes(config or H.TINY_CONFIG)


@pytest.fixture(scope="module")
def tiny():
    from safetensors import safe_open

    with safe_open(H.TINY, framework="np") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


def load_ckpt(path):
    import mindspore as ms

    return ms.load_checkpoint(str(path))


def check_refusal(result, out_dir, *words):
    """One line on stderr naming the problem, non-zero exit, no traceback, nothing written."""
    assert result.returncode != 0
    err = result.stderr.strip()
    assert "Traceback" not in err, err
    assert len(err.splitlines()) == 1, err
    for w in words:
        assert w.lower() in err.lower(), err
    leftovers = os.listdir(out_dir) if os.path.isdir(out_dir) else []
    assert leftovers == [], leftovers
    print(f"\nrefused: {err}")


# ------------------------------------------------------------------------------------ tiny reference


@pytest.mark.parametrize("dtype,np_type", [("keep", np.float16), ("fp32", np.float32), ("fp16", np.float16)])
def test_tiny_reference_converts(tmp_path, tiny, dtype, np_type):
    r = H.run_cli("--pt_weights_file", H.TINY, "--model_config", H.TINY_CONFIG, "--out_dir", tmp_path, "--dtype", dtype)
    print(r.stdout)
    assert r.returncode == 0, r.stderr
    assert os.listdir(tmp_path) == ["tiny_svd.ckpt"]
    expected = _engine_expected()
    got = load_ckpt(tmp_path / "tiny_svd.ckpt")
    assert set(got) == set(expected)
    for name, shape in expected.items():
        a = got[name].asnumpy()
        assert a.shape == tuple(shape) and a.dtype == np_type, name
        assert np.array_equal(a, tiny[name].astype(np_type)), name
    ignored = set(tiny) - set(expected)
    assert f"ignored:     {len(ignored)} tensors" in r.stdout
    assert f"converted:   {len(expected)} tensors" in r.stdout
    size = os.path.getsize(tmp_path / "tiny_svd.ckpt")
    n_values = sum(int(np.prod(s)) for s in expected.values())
    assert n_values * np.dtype(np_type).itemsize < size < n_values * np.dtype(np_type).itemsize * 1.01


def test_fp32_input_and_torch_pickle_with_state_dict(tmp_path, tiny):
    """An fp32 torch pickle wrapped in {"state_dict": ...} converts to the same values;
    --dtype fp16 of fp32 input rounds like numpy does."""
    torch = pytest.importorskip("torch")
    path = tmp_path / "in" / "old_svd.ckpt"
    path.parent.mkdir()
    torch.save({"state_dict": {k: torch.from_numpy(v.astype(np.float32)) for k, v in tiny.items()}, "epoch": 3}, path)
    out = tmp_path / "out"
    for dtype, np_type in (("keep", np.float32), ("fp16", np.float16)):
        r = H.run_cli("--pt_weights_file", path, "--model_config", H.TINY_CONFIG, "--out_dir", out, "--dtype", dtype, "--force")
        assert r.returncode == 0, r.stderr
        got = load_ckpt(out / "old_svd.ckpt")
        for name in _engine_expected():
            a = got[name].asnumpy()
            assert a.dtype == np_type and np.array_equal(a, tiny[name].astype(np_type)), name


def test_bfloat16_input(tmp_path, tiny):
    """bfloat16 safetensors (which numpy cannot hold) keep BFloat16 or become float32."""
    bits = {k: (v.astype(np.float32).view(np.uint32) >> 16).astype(np.uint16) for k, v in tiny.items()}
    src = tmp_path / "svd_bf16.safetensors"
    write_safetensors(src, [(k, "bfloat16", v.shape) for k, v in bits.items()], lambda k: bits[k])
    for dtype in ("keep", "fp32"):
        out = tmp_path / dtype
        r = H.run_cli("--pt_weights_file", src, "--model_config", H.TINY_CONFIG, "--out_dir", out, "--dtype", dtype)
        assert r.returncode == 0, r.stderr
        assert ("BFloat16" if dtype == "keep" else "Float32") in r.stdout
        got = load_ckpt(out / "svd_bf16.ckpt")
        import mindspore as ms

        for name in list(_engine_expected())[:50]:
            t = got[name]
            assert t.dtype == (ms.bfloat16 if dtype == "keep" else ms.float32)
            a = t.astype(ms.float32).asnumpy() if dtype == "keep" else t.asnumpy()
            assert np.array_equal(a, bf16_to_f32(bits[name])), name


def test_force_replaces_and_help(tmp_path):
    (tmp_path / "tiny_svd.ckpt").write_bytes(b"old")
    r = H.run_cli("--pt_weights_file", H.TINY, "--model_config", H.TINY_CONFIG, "--out_dir", tmp_path, "--force")
    assert r.returncode == 0, r.stderr
    assert os.path.getsize(tmp_path / "tiny_svd.ckpt") > 1000
    assert sorted(os.listdir(tmp_path)) == ["tiny_svd.ckpt"]
    h = H.run_cli("--help")
    assert h.returncode == 0
    for flag in ("--pt_weights_file", "--model_config", "--out_dir", "--dtype", "--force", "fp16", "keep", "diffusers"):
        assert flag in h.stdout, flag


def test_old_config_flag_still_works_with_a_note(tmp_path):
    """--config, convert's old name for --model_config, converts as before and says so in one line."""
    r = H.run_cli("--pt_weights_file", H.TINY, "--config", H.TINY_CONFIG, "--out_dir", tmp_path)
    assert r.returncode == 0, r.stderr
    assert os.path.getsize(tmp_path / "tiny_svd.ckpt") > 1000
    notes = [line for line in r.stderr.splitlines() if "--model_config" in line]
    assert len(notes) == 1 and "--config is now --model_config" in notes[0], r.stderr
    out = tmp_path / "both"
    check_refusal(H.run_cli("--pt_weights_file", H.TINY, "--config", H.TINY_CONFIG, "--model_config", "other.yaml",
                            "--out_dir", out), out, "--model_config")
    check_refusal(H.run_cli("--pt_weights_file", H.TINY, "--out_dir", out), out, "--model_config")


# ------------------------------------------------------------------------------------ refusals


def test_refuses_random_bytes(tmp_path):
    for name in ("svd.safetensors", "svd.ckpt", "svd.bin"):
        bad = tmp_path / name
        bad.write_bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())
        out = tmp_path / "out"
        check_refusal(H.run_cli("--pt_weights_file", bad, "--model_config", H.TINY_CONFIG, "--out_dir", out), out, "not")


def test_refuses_truncated_safetensors(tmp_path):
    data = open(H.TINY, "rb").read()
    for cut in (len(data) - 1000, len(data) // 2, 100, 4):
        bad = tmp_path / "tiny_svd.safetensors"
        bad.write_bytes(data[:cut])
        out = tmp_path / "out"
        check_refusal(H.run_cli("--pt_weights_file", bad, "--model_config", H.TINY_CONFIG, "--out_dir", out), out)


def test_refuses_truncated_torch_checkpoint(tmp_path, tiny):
    torch = pytest.importorskip("torch")
    path = tmp_path / "svd.ckpt"
    torch.save({k: torch.from_numpy(v) for k, v in list(tiny.items())[:20]}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    out = tmp_path / "out"
    check_refusal(H.run_cli("--pt_weights_file", path, "--model_config", H.TINY_CONFIG, "--out_dir", out), out, "torch")


def test_refuses_checkpoint_for_another_config(tmp_path):
    """The tiny checkpoint against the full-size config, and against a tiny config with a
    wider UNet."""
    from omegaconf import OmegaConf

    wider = OmegaConf.load(H.TINY_CONFIG)
    wider.model.params.network_config.params.model_channels = 64
    OmegaConf.save(wider, tmp_path / "tiny_wider.yaml")
    for config in (os.path.join(H.REPO, "configs", "svd.yaml"), tmp_path / "tiny_wider.yaml"):
        out = tmp_path / "out"
        r = H.run_cli("--pt_weights_file", H.TINY, "--model_config", config, "--out_dir", out)
        check_refusal(r, out, "does not fit", "wrong shape")


def test_refuses_missing_and_extra_tensors(tmp_path, tiny):
    """Missing, unexpected and mis-shaped names are each listed."""
    names = list(tiny)
    dropped, renamed, reshaped = names[100], names[200], "model.diffusion_model.out.2.weight"

    assert len({dropped, renamed, reshaped}) == 3 and all(n in _engine_expected() for n in (dropped, renamed))

    def produce(k):
        if k == "model.diffusion_model.junk.weight":
            return tiny[renamed]
        return tiny[k][:2] if k == reshaped else tiny[k]

    specs = [(k, "float16", tiny[k].shape if k != reshaped else tiny[k][:2].shape) for k in names if k not in (dropped, renamed)]
    specs.append(("model.diffusion_model.junk.weight", "float16", tiny[renamed].shape))
    bad = tmp_path / "edited.safetensors"
    write_safetensors(bad, specs, produce)
    out = tmp_path / "out"
    r = H.run_cli("--pt_weights_file", bad, "--model_config", H.TINY_CONFIG, "--out_dir", out)
    check_refusal(r, out, "missing", "unexpected", dropped, "model.diffusion_model.junk.weight", reshaped)


def test_refuses_existing_output_without_force(tmp_path):
    target = tmp_path / "tiny_svd.ckpt"
    target.write_bytes(b"precious")
    r = H.run_cli("--pt_weights_file", H.TINY, "--model_config", H.TINY_CONFIG, "--out_dir", tmp_path)
    assert r.returncode != 0 and "--force" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert target.read_bytes() == b"precious" and os.listdir(tmp_path) == ["tiny_svd.ckpt"]


def test_refuses_missing_input(tmp_path):
    out = tmp_path / "out"
    r = H.run_cli("--pt_weights_file", tmp_path / "nope.safetensors", "--model_config", H.TINY_CONFIG, "--out_dir", out)
    check_refusal(r, out, "not found")
    r = H.run_cli("--pt_weights_file", H.TINY, "--model_config", tmp_path / "nope.yaml", "--out_dir", out)
    check_refusal(r, out, "nope.yaml", "does not exist")


# ------------------------------------------------------------------------------------ end to end


def _pipeline_available():
    try:
        importlib.import_module("svd_ms.pipeline")
        return True
    except ImportError:
        return False


@pytest.mark.skipif(not _pipeline_available(), reason="svd_ms.pipeline is not importable")
def test_converted_ckpt_reproduces_reference_video(tmp_path):
    """The tiny reference converted to .ckpt drives the engine to the reference video, within
    the bounds of the engine's own parity test."""
    from svd_ms.pipeline import SVDInferPipeline

    r = H.run_cli("--pt_weights_file", H.TINY, "--model_config", H.TINY_CONFIG, "--out_dir", tmp_path, "--dtype", "fp32")
    assert r.returncode == 0, r.stderr
    ref = np.load(os.path.join(H.REF, "tiny_svd.reference.npz"))
    s = json.load(open(os.path.join(H.REF, "tiny_svd.json")))
    pipe = SVDInferPipeline(H.TINY_CONFIG, checkpoint=str(tmp_path / "tiny_svd.ckpt"), num_frames=s["T"],
                            fps=s["fps_id"] + 1, motion_bucket_id=s["motion"], noise_aug_strength=s["cond_aug"],
                            decode_chunk_size=s["decoding_t"], num_steps=s["steps"])
    video = pipe(ref["image"], latent_noise=ref["randn"], cond_noise=ref["cond_noise"])
    err = np.abs(np.asarray(video) - ref["video"])
    print(f"\nvideo from the converted .ckpt vs reference: max abs err {err.max():.3e} (bound 2e-3), "
          f"mean {err.mean():.3e} (bound 2e-4)")
    assert err.max() <= 2e-3 and err.mean() <= 2e-4


def test_script_runs_only_from_an_installed_project(tmp_path):
    """`python svd_tools/convert.py` edits no sys.path: installed, it is the module's CLI;
    not installed, one line says how to run it."""
    import subprocess

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    installed = subprocess.run([sys.executable, "-c", "import svd_ms, svd_tools"], cwd=tmp_path, env=env,
                               capture_output=True).returncode == 0
    r = subprocess.run([sys.executable, os.path.join(H.REPO, "svd_tools", "convert.py"), "--help"], cwd=tmp_path,
                       env=env, capture_output=True, text=True)
    if installed:
        assert r.returncode == 0 and "--pt_weights_file" in r.stdout, r.stderr
    else:
        err = r.stderr.strip()
        assert r.returncode == 2 and len(err.splitlines()) == 1 and "python -m svd_tools.convert" in err, err
    print(f"\ninstalled={installed}: exit {r.returncode} {r.stderr.strip()}")
