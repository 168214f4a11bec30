"""svd_ms.pipelines.orbit (SV3D) vs upstream: the tiny sv3d_u and sv3d_p runs through the Python
API in graph mode (conditioning, triangle guidance, sampled latents, decoded frames, last-frame
replacement, video), the model's defaults, and the command line on cut-outs."""
import json
import os

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image

from conftest import REFERENCE, ROOT, assert_close
from engine_fixtures import REL, graph_mode
from svd_ms import background, sv3d
from svd_ms.errors import InputError
from svd_ms.pipeline import SVDInferPipeline

CASES = ("tiny_sv3d_u", "tiny_sv3d_p")


def _case(name):
    settings = json.load(open(os.path.join(REFERENCE, f"{name}.json")))
    return settings, dict(np.load(os.path.join(REFERENCE, f"{name}.reference.npz")))


def _pipeline(name, config=None, **overrides):
    settings, _ = _case(name)
    config = config or os.path.join(REFERENCE, f"{name}.sgm.yaml")
    kwargs = dict(decode_chunk_size=settings["decoding_t"])
    kwargs.update(overrides)
    return SVDInferPipeline(config, os.path.join(REFERENCE, f"{name}.safetensors"), **kwargs)


@pytest.fixture(scope="module")
def runs():
    """One graph-mode run per case; the camera of sv3d_p given as its user gave it."""
    results = {}
    with graph_mode():
        for name in CASES:
            settings, r = _case(name)
            pipe = _pipeline(name)
            camera = {}
            if settings["version"] == "p":
                camera = {"elevations_deg": settings["elevations_deg"][0]}  # one value for every frame
            out = pipe.generate(r["image"], latent_noise=r["randn"], cond_noise=r["cond_noise"], **camera)
            path = sv3d.resolve_camera(pipe.input_keys, pipe.num_frames, **camera)
            c, uc = pipe.conditioning(r["image"], r["cond_noise"], path)
            results[name] = (pipe, out, c, uc)
    return results


@pytest.mark.parametrize("name", CASES)
def test_sv3d_graph_mode_matches_upstream(runs, name):
    settings, r = _case(name)
    pipe, out, c, uc = runs[name]
    # The upstream config's sampler and guider settings and the SV3D cond_aug are the defaults.
    assert (pipe.num_frames, pipe.num_steps, pipe.noise_aug_strength) == (settings["T"], settings["steps"], 1e-5)
    assert pipe.orbit and set(pipe.engine.conditioner.input_keys).isdisjoint(sv3d.SVD_ONLY_KEYS)
    for key in ("crossattn", "concat", "vector"):
        assert_close(f"{name} c_{key}", c[key].asnumpy(), r[f"c_{key}"], rel=REL)
        assert_close(f"{name} uc_{key}", uc[key].asnumpy(), r[f"uc_{key}"], rel=REL,
                     max_abs=1e-6 if key != "vector" else None)
    assert_close(f"{name} guidance_scale", pipe.guider.scale.asnumpy().reshape(-1), r["guidance_scale"], rel=1e-6)
    assert_close(f"{name} samples_z", out["latents"], r["samples_z"], rel=2e-4)
    assert_close(f"{name} samples_x_decoded", out["decoded"], r["samples_x_decoded"], rel=2e-4)
    assert_close(f"{name} samples_x", out["frames"], r["samples_x"], rel=2e-4)
    assert_close(f"{name} video", out["video"], r["video"], max_abs=2e-3, mean_abs=2e-4)
    assert np.array_equal(out["frames"][-1], r["image"][0]), "the last frame is the input image"
    if settings["version"] == "p":
        assert_close(f"{name} polars_rad (run)", out["polars_rad"], r["polars_rad"], rel=1e-6)
        assert_close(f"{name} azimuths_rad (run)", out["azimuths_rad"], r["azimuths_rad"], rel=1e-6)
        np.testing.assert_allclose(out["azimuths_deg"], settings["azimuths_deg"], atol=1e-9)
    else:
        assert "polars_rad" not in out


def test_camera_for_a_model_without_camera_is_refused(runs):
    pipe_u = runs["tiny_sv3d_u"][0]
    _, r = _case("tiny_sv3d_u")
    with pytest.raises(InputError, match="^elevations_deg: this model takes no camera path"):
        pipe_u.generate(r["image"], elevations_deg=10.0)


def test_sv3d_defaults_without_clip_settings_in_config():
    """Upstream's sv3d configs set neither the clip length nor the steps: the pipeline takes the
    sampling script's (21 frames, 50 steps, cond_aug 1e-5) and sizes the triangle guider."""
    cfg = OmegaConf.load(os.path.join(REFERENCE, "tiny_sv3d_u.sgm.yaml"))
    sampler = cfg.model.params.sampler_config.params
    del sampler["num_steps"]
    del sampler.guider_config.params["num_frames"]
    pipe = _pipeline("tiny_sv3d_u", config=OmegaConf.to_container(cfg), decode_chunk_size=None)
    assert (pipe.num_frames, pipe.num_steps, pipe.noise_aug_strength) == (21, 50, 1e-5)
    scale = pipe.guider.scale.asnumpy().reshape(-1)
    assert scale.shape == (21,) and scale[10] == 2.5 and scale[0] == scale[-1] == 1.0



def _cutout(h=64, w=96, box=(10, 30, 50, 90), colour=(200, 30, 60)):
    """Transparent canvas with one opaque rectangle (rows box[0]:box[1], cols box[2]:box[3])."""
    arr = np.zeros((h, w, 4), np.uint8)
    arr[..., :3] = 17  # colour under the transparent pixels must not show
    arr[box[0]:box[1], box[2]:box[3]] = colour + (255,)
    return arr


# ---- the command line ------------------------------------------------------------------------

def _cli():
    import importlib.util
    spec = importlib.util.spec_from_file_location("image_to_video", os.path.join(ROOT, "image_to_video.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _cli_args(out, image, *extra):
    return ["--SVD.config", os.path.join(REFERENCE, "tiny_sv3d_p.sgm.yaml"), "--SVD.checkpoint",
            os.path.join(REFERENCE, "tiny_sv3d_p.safetensors"), "--SVD.num_frames=5", "--SVD.num_steps=1",
            "--height=128", "--device_target=CPU", "--mode=1", "--progress=false", "--seed=2",
            "--output_dir", str(out), "--image", str(image), *extra]


def test_cli_orbit_from_rgba_cutout_with_a_camera_path(tmp_path, capsys):
    cutout = tmp_path / "object.png"
    Image.fromarray(_cutout()).save(cutout)
    rc = _cli().main(_cli_args(tmp_path / "o", cutout, "--elevations_deg=[0,5,10,15,20]",
                               "--azimuths_deg=[0,72,144,216,288]"))
    _, err = capsys.readouterr()
    assert rc == 0, err
    side = json.loads((tmp_path / "o" / "object_seed2.json").read_text())
    assert side["frames"] == 5 and side["width"] == side["height"] == 128
    assert side["camera"]["elevations_deg"] == [0, 5, 10, 15, 20]
    np.testing.assert_allclose(side["camera"]["polars_rad"], np.deg2rad([90, 85, 80, 75, 70]), atol=1e-9)
    assert "--azimuths_deg=[0.0, 72.0, 144.0, 216.0, 288.0]" in side["reproduce"]


@pytest.mark.parametrize("extra,needle,code", [
    (["--azimuths_deg=[0,90]"], "azimuths_deg", 2),                 # wrong count
    (["--elevations_deg=[1,2,3]"], "elevations_deg", 2),            # wrong count
    (["--azimuths_deg=[a,b,c,d,e]"], "azimuths_deg", 2),            # not numbers
])
def test_cli_bad_camera_is_one_line(tmp_path, capsys, extra, needle, code):
    cutout = tmp_path / "object.png"
    Image.fromarray(_cutout()).save(cutout)
    rc = _cli().main(_cli_args(tmp_path / "o", cutout, *extra))
    _, err = capsys.readouterr()
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert rc == code and len(lines) == 1 and needle in lines[0] and "Traceback" not in err, err


def test_cli_rgb_without_rembg_is_refused_and_keep_background_runs(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(background, "rembg_model_path", lambda: str(tmp_path / "no_model.onnx"))
    photo = tmp_path / "photo.png"
    Image.fromarray(np.full((128, 160, 3), 90, np.uint8)).save(photo)
    rc = _cli().main(_cli_args(tmp_path / "o", photo))
    _, err = capsys.readouterr()
    assert rc == 1 and "--keep_background" in err and "photo.png" in err and "Traceback" not in err, err
    assert not list((tmp_path / "o").glob("*.mp4"))
    rc = _cli().main(_cli_args(tmp_path / "o", photo, "--keep_background=true"))
    _, err = capsys.readouterr()
    assert rc == 0, err
