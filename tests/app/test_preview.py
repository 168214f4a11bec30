"""svd_ms.app.preview: latents -> uint8 preview frames and a strip of them. The map for real
weights is checked against an independent fit of the same latent space (no real SVD weights are
on this machine, and the tiny test models' random encoders are far from linear in colour: a map
fitted to the tiny reference encoder misses held-out solid colours by 63 levels, no better than
one grey); the fitting code is checked on pictures made from latents by a known map."""
import numpy as np
import pytest
from mindspore import Tensor

from svd_ms.app.preview import (SD_LATENT_COLOURS, fit_latent_colours, preview_frames, preview_strip)
from svd_ms.errors import InputError

# keturn's least-squares fit for the SD v1.4 autoencoder ("Decoding latents to RGB without
# upscaling", discuss.huggingface.co, 2022; the numbers AUTOMATIC1111's cheap preview uses), made
# independently of ComfyUI's: a mistyped or transposed coefficient in ours would break the agreement.
KETURN_SD14 = np.array([[0.298, 0.207, 0.208],
                        [0.187, 0.286, 0.173],
                        [-0.158, 0.189, 0.264],
                        [-0.184, -0.271, -0.473]])


def test_preview_frames_shape_dtype_and_determinism():
    z = np.random.default_rng(0).standard_normal((5, 4, 8, 12)).astype(np.float32)
    frames = preview_frames(z)
    assert frames.shape == (5, 8, 12, 3) and frames.dtype == np.uint8
    assert np.array_equal(frames, preview_frames(z.copy())) and np.array_equal(frames, preview_frames(Tensor(z)))
    assert preview_frames(z[0]).shape == (1, 8, 12, 3)  # one latent image is one frame
    assert frames.min() == 0 and frames.max() == 255  # unit-variance noise reaches past [-1, 1]: clipped
    with pytest.raises(InputError, match="shape \\(frames, 4, h, w\\)"):
        preview_frames(np.zeros((2, 8, 8, 8), np.float32))


def test_the_sd_map_agrees_with_an_independent_fit():
    ours = SD_LATENT_COLOURS.weights.astype(np.float64)
    cosines = [ours[:, k] @ KETURN_SD14[:, k] / np.linalg.norm(ours[:, k]) / np.linalg.norm(KETURN_SD14[:, k])
               for k in range(3)]
    # Latents of real pictures have roughly unit spread per channel (the scale factor's purpose).
    z = np.random.default_rng(1).standard_normal((1, 4, 32, 32)).astype(np.float32) * 0.8
    theirs = np.clip((np.einsum("tchw,cr->thwr", z, KETURN_SD14) + 1) * 127.5, 0, 255)
    diff = np.abs(preview_frames(z).astype(np.float64) - theirs)
    corr = [np.corrcoef(preview_frames(z)[..., k].ravel(), theirs[..., k].ravel())[0, 1] for k in range(3)]
    print(f"[preview] ComfyUI SD15 vs keturn SD1.4 map: column cosines {np.round(cosines, 3)} (bound > 0.95), "
          f"preview correlation {np.round(corr, 3)} (> 0.93), mean |diff| {diff.mean():.1f} levels (< 25)")
    assert min(cosines) > 0.95 and min(corr) > 0.93 and diff.mean() < 25


def test_fitting_recovers_a_known_map_from_latents_and_the_pictures_they_encode():
    """Pictures made from latents by a known map (each latent's colour over its 8 x 8 pixels,
    plus pixel noise): the fit finds the map, and previews with it show the pictures."""
    rng = np.random.default_rng(3)
    true = np.array([[0.4, 0.1, -0.2], [-0.3, 0.5, 0.1], [0.2, -0.1, 0.6], [0.1, 0.3, -0.4]], np.float32)
    bias = np.array([0.05, -0.1, 0.2], np.float32)
    z = rng.standard_normal((6, 4, 5, 7)).astype(np.float32)
    pictures = (np.einsum("tchw,cr->trhw", z, true) + bias[None, :, None, None]).repeat(8, axis=2).repeat(8, axis=3)
    pictures += rng.normal(0, 0.05, pictures.shape).astype(np.float32)
    fitted = fit_latent_colours(z, pictures, "synthetic")
    err = max(np.abs(fitted.weights - true).max(), np.abs(fitted.bias - bias).max())
    shown = preview_frames(z, fitted).astype(np.float64)
    expected = np.clip(np.rint((pictures[:, :, ::8, ::8].transpose(0, 2, 3, 1) + 1) * 127.5), 0, 255)
    level_err = np.abs(shown - expected).mean()
    print(f"[preview] fitted map: max coefficient error {err:.2e} (bound 5e-3), preview vs pictures "
          f"{level_err:.1f} levels (pixel noise alone: ~5)")
    assert err < 5e-3 and level_err < 8 and fitted.source == "synthetic"
    with pytest.raises(InputError, match="do not match"):
        fit_latent_colours(z, pictures[:, :, :-8], "bad")


def test_preview_strip_picks_frames_evenly_and_lays_them_out():
    frames = np.stack([np.full((4, 6, 3), 10 * k, np.uint8) for k in range(5)])
    strip = preview_strip(frames, max_frames=3, scale=2, gap=1)
    assert strip.shape == (8, 3 * 12 + 2, 3) and strip.dtype == np.uint8
    assert [strip[0, c * 13, 0] for c in range(3)] == [0, 20, 40]  # frames 0, 2, 4
    assert strip[0, 12, 0] == 32  # the gap
    grid = preview_strip(frames, max_frames=8, columns=2, scale=1, gap=0)
    assert grid.shape == (3 * 4, 2 * 6, 3) and grid[8, 0, 0] == 40 and grid[8, 6, 0] == 32  # 5 frames, 2 a row
    assert np.array_equal(grid, preview_strip(frames, max_frames=8, columns=2, scale=1, gap=0))
    with pytest.raises(InputError, match="uint8 frames"):
        preview_strip(frames.astype(np.float32))
