"""The pipelines, one per kind of run, sharing one built model (`PipelineComponents`):
image-to-video, video-to-video, chained clips and SV3D orbits; `svd_ms.pipeline.SVDInferPipeline`
is the front door that dispatches to them.

Names are imported on first use, so that `svd_ms.pipelines.results` (the result types a batch
job reads back) loads without the model code.
"""
import importlib

_EXPORTS = {
    "ChainedClipsPipeline": "chained", "ImageToVideoPipeline": "image_to_video", "OrbitPipeline": "orbit",
    "VideoToVideoPipeline": "video_to_video", "PipelineComponents": "components", "ModelDefaults": "defaults",
    "StepInfo": "results", "VideoResult": "results", "ClipResult": "results",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
