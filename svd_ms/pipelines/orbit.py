"""SV3D orbits: views around an object from one image (sv3d_u; sv3d_p along a camera path)."""
from typing import Callable, Optional

from .. import sv3d
from ..errors import ConfigError
from ..seeds import resolve_seed
from .clip import ClipNoise, run_clip
from .components import TypedPipeline, check_output_type, single_clip_params
from .results import StepInfo, VideoResult


class OrbitPipeline(TypedPipeline):
    """`OrbitPipeline.from_params(config='configs/sv3d_p.yaml', ...)('object.png', elevations_deg=10)`."""

    def __call__(self, image, seed: Optional[int] = None, *, elevations_deg=None, azimuths_deg=None,
                 latent_noise=None, cond_noise=None, sampler_noise=None, progress: bool = False,
                 callback: Optional[Callable[[StepInfo], Optional[bool]]] = None, output_type: str = "video",
                 height: Optional[int] = None, width: Optional[int] = None, keep_background: bool = False,
                 image_frame_ratio: Optional[float] = None, **overrides) -> VideoResult:
        """The orbit views of the object in `image`, as upstream's sampling script makes them.

        image: a cut-out (a picture with transparency) is recentred on white; a picture without
            one has its background removed (rembg, offline), or with keep_background is used as it
            is; uint8 HxWx3 pixels and float arrays are taken as prepared (svd_ms.preparation).
        height/width: the side of the square views (default 576).
        elevations_deg, azimuths_deg: the camera path of an sv3d_p model (svd_ms.sv3d.camera_path);
            a model without camera inputs refuses them.
        The last view is the input image itself (the orbit ends where it started); `decoded` keeps
        the decoder's own last frame. Noise, callback and overrides as ImageToVideoPipeline.
        """
        parts = self.components
        if not parts.orbit:
            raise ConfigError(f"config {parts.params.config!r} is not an SV3D orbit model: use ImageToVideoPipeline")
        check_output_type(output_type)
        params = single_clip_params(parts, overrides, "an orbit")
        camera = sv3d.resolve_camera(parts.input_keys, parts.resolve(params)["num_frames"], elevations_deg,
                                     azimuths_deg)
        seed = resolve_seed(seed)
        prepared = parts.prepare_input(image, height, width, keep_background, image_frame_ratio)
        result = run_clip(parts, prepared.array, seed, params, noise=ClipNoise(latent_noise, cond_noise, sampler_noise),
                          progress=progress, callback=callback, output_type=output_type, camera=camera,
                          input_is_last_view=True)
        result.input = prepared.info
        return result
