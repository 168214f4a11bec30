"""svd-ms: Stability AI's video diffusion models (SVD, SV3D, ...) on MindSpore.

    from svd_ms import SVDInferPipeline, SVDParams

Names are imported on first use, so `import svd_ms` alone loads no model code.
"""
import importlib

_EXPORTS = {
    "SVDInferPipeline": "svd_ms.pipeline", "SVDParams": "svd_ms.params",
    "ImageToVideoPipeline": "svd_ms.pipelines", "VideoToVideoPipeline": "svd_ms.pipelines",
    "ChainedClipsPipeline": "svd_ms.pipelines", "OrbitPipeline": "svd_ms.pipelines",
    "VideoResult": "svd_ms.pipelines.results", "ClipResult": "svd_ms.pipelines.results",
    "StepInfo": "svd_ms.pipelines.results", "prepare_input": "svd_ms.preparation",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


def __dir__():
    return sorted(list(globals()) + __all__)
