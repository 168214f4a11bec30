"""svd_ms.pipeline: the front door. generate() conditions on exactly what the command line
conditions on for the same file and flags (plain pictures and SV3D cut-outs, sizes not multiples
of 64 included); it hands each call to the typed pipeline for it; a camera is refused by every run
of a model without one, chains included; the seed a run used is always in its result."""
import importlib.util
import os

import numpy as np
import pytest
from PIL import Image

from conftest import REFERENCE, ROOT, TINY_CONFIG, TINY_WEIGHTS
from svd_ms.errors import ConfigError, InputError

SMALL = dict(num_frames=2, num_steps=1, decode_chunk_size=2)
REPEAT = 2e-4  # repeat-run bound of MindSpore's CPU kernels (tests/pipelines/test_image_to_video.py)


def _cli():
    spec = importlib.util.spec_from_file_location("image_to_video", os.path.join(ROOT, "image_to_video.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _record_conditioning(pipe, monkeypatch):
    """Every conditioning image the pipeline's runs are conditioned on, in order."""
    seen = []
    real = pipe.components.conditioning

    def spy(image, cond_noise, camera=None, params=None):
        seen.append(np.array(image, copy=True))
        return real(image, cond_noise, camera, params)

    monkeypatch.setattr(pipe.components, "conditioning", spy)
    return seen


@pytest.fixture(scope="module")
def pipe():
    from svd_ms.pipeline import SVDInferPipeline
    return SVDInferPipeline(TINY_CONFIG, TINY_WEIGHTS, **SMALL)


def _half_transparent_picture(path, size=(200, 150)):
    """A photo-like RGBA picture whose sides are not multiples of 64."""
    w, h = size
    rgba = np.random.default_rng(3).integers(0, 256, (h, w, 4), dtype=np.uint8)
    rgba[..., 3] = np.linspace(0, 255, w).astype(np.uint8)[None, :]
    Image.fromarray(rgba).save(path)
    return path


def test_generate_on_a_path_conditions_bit_for_bit_as_the_cli(pipe, tmp_path, monkeypatch):
    picture = _half_transparent_picture(tmp_path / "photo.png")
    seen = _record_conditioning(pipe, monkeypatch)
    args = ["--SVD.config", TINY_CONFIG, "--SVD.checkpoint", TINY_WEIGHTS, "--SVD.num_frames=2", "--SVD.num_steps=1",
            "--SVD.decode_chunk_size=2", "--device_target=CPU", "--mode=1", "--progress=false", "--seed=4",
            "--output_format=png", "--output_dir", str(tmp_path / "out"), "--image", str(picture)]
    assert _cli().main(args, pipeline_factory=lambda params: pipe) == 0
    result = pipe.generate(str(picture), seed=4, output_type="latent")
    cli_image, api_image = seen
    assert cli_image.shape == (1, 3, 128, 192)  # 200x150 brought down to 192x128, as upstream does
    assert np.array_equal(cli_image, api_image)
    assert any("not a multiple of 64" in w for w in result.input["warnings"])
    # --width/--height: the same flags through generate() give the same conditioning too.
    args = args[:-4] + ["--overwrite=true", "--height=64", "--width=128", "--output_dir", str(tmp_path / "o2"),
                        "--image", str(picture)]
    assert _cli().main(args, pipeline_factory=lambda params: pipe) == 0
    pipe.generate(str(picture), seed=4, output_type="latent", height=64, width=128)
    assert seen[2].shape == (1, 3, 64, 128) and np.array_equal(seen[2], seen[3])


def test_generate_on_an_sv3d_cutout_conditions_bit_for_bit_as_the_cli(tmp_path, monkeypatch):
    from svd_ms.pipeline import SVDInferPipeline

    config, weights = (os.path.join(REFERENCE, f"tiny_sv3d_u.{ext}") for ext in ("sgm.yaml", "safetensors"))
    orbit = SVDInferPipeline(config, weights, **SMALL)
    cutout = np.zeros((70, 100, 4), np.uint8)
    cutout[20:50, 30:80] = (200, 30, 60, 255)
    cutout[20:50, 30:40, 3] = 128  # a half-transparent edge
    path = tmp_path / "object.png"
    Image.fromarray(cutout).save(path)
    seen = _record_conditioning(orbit, monkeypatch)
    args = ["--SVD.config", config, "--SVD.checkpoint", weights, "--SVD.num_frames=2", "--SVD.num_steps=1",
            "--SVD.decode_chunk_size=2", "--height=64", "--device_target=CPU", "--mode=1", "--progress=false",
            "--seed=4", "--output_format=png", "--output_dir", str(tmp_path / "out"), "--image", str(path)]
    assert _cli().main(args, pipeline_factory=lambda params: orbit) == 0
    result = orbit.generate(str(path), seed=4, height=64)
    cli_image, api_image = seen
    assert cli_image.shape == (1, 3, 64, 64) and np.array_equal(cli_image, api_image)
    assert result.input["preprocessing"].startswith("SV3D") and np.array_equal(result.frames[-1], api_image[0])


def test_a_camera_is_refused_by_every_run_of_a_model_without_one(pipe):
    image = np.zeros((64, 64, 3), np.uint8)
    errors = []
    for extra in ({}, {"num_clips": 2}, {"video": np.zeros((2, 64, 64, 3), np.uint8)}):
        with pytest.raises(InputError) as info:
            pipe.generate(image, seed=1, elevations_deg=10.0, **extra)
        errors.append(str(info.value))
    assert errors[0].startswith("elevations_deg: this model takes no camera path") and len(set(errors)) == 1


def test_the_seed_used_is_in_every_result(pipe):
    image = np.asarray(Image.open(os.path.join(REFERENCE, "tiny_svd.input.png")).convert("RGB"))[:64, :128]
    drawn = pipe.generate(image)
    assert isinstance(drawn.seed, int) and 0 <= drawn.seed < 2**32
    again = pipe.generate(image, seed=drawn.seed)
    diff = np.abs(again.video - drawn.video).max()
    print(f"rerun with the recorded seed: max_abs={diff:.2e} | bound {REPEAT:.0e}")
    assert diff <= REPEAT
    clips = []
    chain = pipe.generate(image, num_clips=2, clip_callback=clips.append)
    assert isinstance(chain.seed, int) and clips[0].seed == chain.seed
    many = pipe.generate_many(image, num_videos=2)
    assert many[1].seed == (many[0].seed + 1) % 2**32
    fixed_noise = pipe.generate(image, latent_noise=drawn.latents * 0, output_type="latent")
    assert isinstance(fixed_noise.seed, int)


def test_generate_hands_each_call_to_its_typed_pipeline(pipe, monkeypatch):
    from svd_ms.pipelines import ChainedClipsPipeline, ImageToVideoPipeline, OrbitPipeline, VideoToVideoPipeline

    called = []
    for name in ("image_to_video", "video_to_video", "chained_clips", "orbit_views"):
        monkeypatch.setattr(pipe, name, lambda *a, _name=name, **k: called.append(_name))
    image, video = np.zeros((64, 64, 3), np.uint8), np.zeros((2, 64, 64, 3), np.uint8)
    pipe.generate(image)
    pipe.generate(None, video=video)
    pipe.generate(image, num_clips=3)
    pipe.generate(image, clip_callback=print)
    assert called == ["image_to_video", "video_to_video", "chained_clips", "chained_clips"]
    with pytest.raises(ConfigError, match="not an SV3D orbit model"):
        OrbitPipeline(pipe.components)(image)
    with pytest.raises(InputError, match="keep_background prepare SV3D inputs"):
        pipe.generate(image, keep_background=True)
    # The typed pipelines are views over the one built model.
    for typed in (ImageToVideoPipeline, VideoToVideoPipeline, ChainedClipsPipeline, OrbitPipeline):
        assert typed(pipe.components).components.engine is pipe.engine


def test_the_package_exports_the_front_door():
    import svd_ms
    from svd_ms import SVDInferPipeline, SVDParams
    from svd_ms.params import SVDParams as direct
    from svd_ms.pipeline import SVDInferPipeline as front

    assert SVDInferPipeline is front and SVDParams is direct and "SVDInferPipeline" in svd_ms.__all__
