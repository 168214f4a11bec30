"""A stand-in for SVDInferPipeline in the job and CLI tests: built from SVDParams, cheap and
deterministic output, the same `generate` contract (a result with `.video` and `.timings`)."""
from types import SimpleNamespace

import numpy as np


class FakePipeline:
    nan = False
    raise_nonfinite = False

    def __init__(self, params):
        self.params = params
        self.frames = self.num_frames = params.num_frames or 3
        self.steps = params.num_steps or 2
        self.untrained = params.checkpoint is None

    def generate(self, image, seed=None, progress=False, **kwargs):
        from svd_ms.errors import NonFiniteError

        if self.raise_nonfinite:
            raise NonFiniteError("non-finite values (NaN/inf) in latents after sampling step 1/2")
        a = np.asarray(image, dtype=np.float32).transpose(2, 0, 1) / 255.0
        rng = np.random.default_rng(seed)
        video = np.stack([np.clip(a * (1 - 0.1 * t) + 0.1 * rng.random(a.shape), 0, 1)
                          for t in range(self.frames)]).astype(np.float32)
        if self.nan:
            video[0, 0, 0, 0] = np.nan
        timings = {"compile_s": 0.0, "step_s": [0.01] * self.steps, "decode_s": 0.01, "total_s": 0.03}
        return SimpleNamespace(video=video, timings=timings)
