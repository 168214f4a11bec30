"""A stand-in for SVDInferPipeline in the job, CLI and web tests: built from SVDParams, cheap and
deterministic output, the same interface the callers use: `resolve(params)` (the model's defaults,
resolved by the pipeline and nowhere else), `call_params(**overrides)`, `untrained`, and
`generate(image, seed=...)` returning a result with `.video`, `.timings` and `.seed` (the seed used,
drawn by the one seed rule when none was given)."""
from types import SimpleNamespace

import numpy as np

# The stand-in model's own defaults (the real pipeline takes them from the config).
DEFAULT_FRAMES, DEFAULT_STEPS = 3, 2


class FakePipeline:
    nan = False
    raise_nonfinite = False

    def __init__(self, params):
        self.params = params
        self.untrained = params.checkpoint is None
        self.calls = []  # (seed, overrides) of every generate call

    def resolve(self, params):
        t = params.num_frames or DEFAULT_FRAMES
        return {"num_frames": t, "num_steps": params.num_steps or DEFAULT_STEPS,
                "decode_chunk_size": params.decode_chunk_size or t,
                "noise_aug_strength": 0.02 if params.noise_aug_strength is None else params.noise_aug_strength}

    def call_params(self, **overrides):
        return self.params.replace(**overrides) if overrides else self.params

    @property
    def num_frames(self):
        return self.resolve(self.params)["num_frames"]

    def generate(self, image, seed=None, progress=False, callback=None, **kwargs):
        from svd_ms.errors import NonFiniteError
        from svd_ms.seeds import resolve_seed

        seed = resolve_seed(seed)
        overrides = {k: v for k, v in kwargs.items() if k in self.params.to_dict()}
        self.calls.append((seed, overrides))
        sizes = self.resolve(self.call_params(**overrides))
        if self.raise_nonfinite:
            raise NonFiniteError("non-finite values (NaN/inf) in latents after sampling step 1/2")
        a = np.asarray(image, dtype=np.float32).transpose(2, 0, 1) / 255.0
        rng = np.random.default_rng(seed)
        video = np.stack([np.clip(a * (1 - 0.1 * t) + 0.1 * rng.random(a.shape), 0, 1)
                          for t in range(sizes["num_frames"])]).astype(np.float32)
        if self.nan:
            video[0, 0, 0, 0] = np.nan
        timings = {"compile_s": 0.0, "step_s": [0.01] * sizes["num_steps"], "decode_s": 0.01, "total_s": 0.03}
        return SimpleNamespace(video=video, timings=timings, seed=seed)
