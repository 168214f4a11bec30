"""svd_ms.pipelines.results: results read like diffusers' outputs (result["video"]), the camera of
an orbit by its names, `in` for what a result holds."""
import numpy as np

from svd_ms.pipelines.results import ClipResult, StepInfo, VideoResult


def test_video_result_reads_by_key_and_holds_the_camera():
    latents = np.zeros((2, 4, 8, 8), np.float32)
    result = VideoResult(latents=latents, seed=5, camera={"polars_rad": np.ones(2)})
    assert result["latents"] is latents and result["seed"] == 5
    assert np.array_equal(result["polars_rad"], np.ones(2))
    assert "polars_rad" in result and "latents" in result and "video" not in result
    assert "azimuths_rad" not in VideoResult(latents=latents)


def test_step_info_and_clip_result_defaults():
    info = StepInfo("sampling", 0, 4, sigma=1.5)
    assert info.clip == 0 and info.latents is None and info.denoised is None
    clip = ClipResult(1, 7, np.zeros((1, 3, 4, 4)), np.zeros((2, 3, 4, 4)), np.zeros((2, 4, 1, 1)))
    assert clip.timings == {} and clip.seed == 7
