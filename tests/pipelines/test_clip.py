"""svd_ms.pipelines.clip: one clip -- its noise drawn from the seed in upstream's order (the
conditioning noise, then the latent noise) or given, checked shapes, timings, the SV3D last view."""
import numpy as np
import pytest

from conftest import TINY_CONFIG, TINY_WEIGHTS
from svd_ms.errors import InputError
from svd_ms.params import SVDParams
from svd_ms.pipelines.clip import ClipNoise, run_clip
from svd_ms.pipelines.components import PipelineComponents

REPEAT = 2e-4  # repeat-run bound of MindSpore's CPU kernels (tests/pipelines/test_image_to_video.py)


@pytest.fixture(scope="module")
def parts():
    return PipelineComponents(SVDParams(config=TINY_CONFIG, checkpoint=TINY_WEIGHTS, num_frames=2, num_steps=2,
                                        decode_chunk_size=2))


@pytest.fixture(scope="module")
def image(reference):
    return np.ascontiguousarray(reference["image"][:, :, :64, :64])


def test_the_seed_draws_the_conditioning_noise_then_the_latent_noise(parts, image):
    seeded = run_clip(parts, image, 8, parts.params, output_type="latent")
    rng = np.random.default_rng(8)
    cond = rng.standard_normal(image.shape).astype(np.float32)
    latent = rng.standard_normal((2, 4, 8, 8)).astype(np.float32)
    given = run_clip(parts, image, 8, parts.params, noise=ClipNoise(latent=latent, cond=cond), output_type="latent")
    diff = np.abs(seeded.latents - given.latents).max()
    print(f"seeded vs the same draws given: max_abs={diff:.2e} | bound {REPEAT:.0e}")
    assert diff <= REPEAT and seeded.seed == 8 and seeded.video is None
    assert set(seeded.timings) >= {"conditioning_s", "compile_s", "step_s", "sampling_s", "decode_s", "total_s"}
    assert len(seeded.timings["step_s"]) == 2 and seeded.timings["decode_s"] is None


def test_noise_of_the_wrong_shape_is_refused(parts, image):
    with pytest.raises(InputError, match=r"latent_noise must have shape \(2, 4, 8, 8\)"):
        run_clip(parts, image, 1, parts.params, noise=ClipNoise(latent=np.zeros((3, 4, 8, 8))))
    with pytest.raises(InputError, match="cond_noise must have shape"):
        run_clip(parts, image, 1, parts.params, noise=ClipNoise(cond=np.zeros((1, 3, 8, 8))))
    with pytest.raises(InputError, match="sampler_noise must have shape"):
        run_clip(parts, image, 1, parts.params, noise=ClipNoise(sampler=np.zeros((5, 2, 4, 8, 8))))
    with pytest.raises(InputError, match="multiples of 64"):
        run_clip(parts, np.zeros((1, 3, 64, 96), np.float32), 1, parts.params)


def test_the_input_can_be_the_last_view(parts, image):
    result = run_clip(parts, image, 3, parts.params, input_is_last_view=True)
    assert np.array_equal(result.frames[-1], image[0]) and not np.array_equal(result.decoded[-1], image[0])
    assert np.array_equal(result.video[-1], np.clip((image[0] + 1) / 2, 0, 1))
