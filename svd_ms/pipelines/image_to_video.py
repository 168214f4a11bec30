"""Image-to-video: one clip from one image (Stable Video Diffusion)."""
from typing import Callable, Optional

from ..errors import ConfigError
from ..seeds import resolve_seed
from .clip import ClipNoise, run_clip
from .components import TypedPipeline, check_output_type, single_clip_params
from .results import StepInfo, VideoResult


class ImageToVideoPipeline(TypedPipeline):
    """`ImageToVideoPipeline.from_params(config=..., checkpoint=...)(image, seed=1, num_frames=14)`."""

    def __call__(self, image, seed: Optional[int] = None, *, latent_noise=None, cond_noise=None, sampler_noise=None,
                 progress: bool = False, callback: Optional[Callable[[StepInfo], Optional[bool]]] = None,
                 output_type: str = "video", height: Optional[int] = None, width: Optional[int] = None,
                 **overrides) -> VideoResult:
        """One video from `image`: a path or PIL image, prepared as the command line prepares it
        (svd_ms.preparation; height/width are its --height/--width), or uint8 HxWx3 pixels or a
        float array in [-1, 1], taken as they are (pixels are sized when height/width are given).

        seed: fixes the noise (numpy's default_rng(seed): the conditioning noise first, then the
            latent noise, then the sampler's draws); drawn when None, and recorded in the result.
        latent_noise (T, 4, H/8, W/8), cond_noise (1, 3, H, W), sampler_noise (K, T, 4, H/8, W/8):
            replace those draws (upstream's order of torch.randn_like calls for the sampler's).
        callback(StepInfo): after every sampling step and decoded chunk; False stops the run.
        output_type: 'video', or 'latent' to stop after sampling.
        overrides: per-call values of SVDParams' sampling fields.
        """
        parts = self.components
        if parts.orbit:
            raise ConfigError(f"config {parts.params.config!r} is an SV3D orbit model: use OrbitPipeline")
        check_output_type(output_type)
        params = single_clip_params(parts, overrides, "image-to-video")
        seed = resolve_seed(seed)
        prepared = parts.prepare_input(image, height, width)
        result = run_clip(parts, prepared.array, seed, params, noise=ClipNoise(latent_noise, cond_noise, sampler_noise),
                          progress=progress, callback=callback, output_type=output_type)
        result.input = prepared.info
        return result
