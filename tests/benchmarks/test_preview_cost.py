"""benchmarks.preview_cost: the alternating measurement on a stand-in pipeline (the previewing
callback really makes frames, a strip and a PNG from each step's denoised estimate; the plain one
does not) and the report's verdict against the 5 % bound."""
from types import SimpleNamespace

import numpy as np

from benchmarks import preview_cost
from svd_ms.pipelines.results import StepInfo


class SteppingPipeline:
    def __init__(self):
        self.previews = []

    def generate(self, image, seed=None, callback=None):
        rng = np.random.default_rng(seed)
        for i in range(3):
            callback(StepInfo("sampling", i, 3, 1.0, None, denoised=rng.standard_normal((4, 4, 8, 8))))
        callback(StepInfo("decoding", 0, 1))
        self.previews.append(getattr(callback, "last_strip", None) is not None and callback.preview)
        return SimpleNamespace(timings={"step_s": [0.02, 0.01, 0.01]})


def test_alternating_runs_with_and_without_previews_and_the_report():
    pipe = SteppingPipeline()
    m = preview_cost.measure(pipe, np.zeros((64, 64, 3), np.uint8), repeats=2)
    assert pipe.previews == [False, True, True, False, False, True]  # warm-up pair, then alternating order
    assert len(m["runs_with_s"]) == len(m["runs_without_s"]) == 2
    assert m["step_s"] == 0.01 and m["strip_shape"] == (16, 8 * 4 * 2 + 3 * 2, 3)
    text = preview_cost.report(dict(m, ratio=1.01, preview_share=0.002), "stand-in")
    assert "within the issue's bound of 5 %" in text and "ratio 1.0100" in text
    assert "OVER" in preview_cost.report(dict(m, ratio=1.2, preview_share=0.002), "stand-in")
