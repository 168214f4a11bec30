"""SV4D 2.0 as it runs on an Ascend NPU, on this CPU host: the policy forced to Ascend, every
Ascend-only operation replaced by its contract double (kernel_contracts.py), graph mode, against
upstream's recorded two-chunk run (../shared/reference/tiny_sv4d2.*) within the float16 bounds of
tests/test_precision.py. Its space-time attention (svd_ms/modules/spacetime_attention.py: view and
frame attention after every spatial block) reaches the fused kernel through the same
CrossAttention as the video UNet; the walk for Ascend-only call sites covers the file
(test_kernel_contracts.py)."""
import numpy as np
import pytest

from ascend.test_pipeline_on_ascend import FP16_VIDEO_BOUNDS, _attention_choices
from conftest import assert_close
from pipelines.test_sv4d2 import CONFIG, NPZ, SIZE, STEPS, WEIGHTS, recorded_noise
from svd_ms import policy


def _attention_layers(engine):
    """[(name, heads, head size, implementation)] for every attention layer of a built engine."""
    layers = []
    for name, cell in engine.cells_and_names():
        if getattr(cell, "implementation", None) in ("flash", "math") and hasattr(cell, "to_q"):
            heads = cell.heads
            layers.append((name, heads, cell.to_q.weight.shape[0] // heads, cell.implementation))
    return layers


@pytest.mark.parametrize("amp_level", ["O2", "O0"])
def test_sv4d2_on_ascend(ascend, amp_level):
    """Both chunks of upstream's run from its recorded draws. Every attention layer, the view
    and frame ones included, picks the fused kernel and has a head layout it takes, so none falls
    back to the math path."""
    from svd_ms.pipelines.sv4d2 import SV4D2Pipeline

    ref = dict(np.load(NPZ))
    pipe = SV4D2Pipeline(CONFIG, WEIGHTS, amp_level=amp_level)
    layers = _attention_layers(pipe.engine)
    assert set(_attention_choices(pipe.engine)) == {"flash"}
    for kind in (".time_mix_blocks.", ".motion_blocks.", ".transformer_blocks."):
        assert any(kind in name for name, *_ in layers), f"no {kind} attention in the SV4D 2.0 UNet"
    misfits = [(name, heads, d) for name, heads, d, _ in layers if not policy.flash_attention_fits(heads, d)]
    assert not misfits, f"attention layers the fused kernel would not take: {misfits}"
    # check_memory=False: the host-memory guard (tested in tests/runtime/) is not under test here.
    out = pipe(ref["input_frames"], num_steps=STEPS, size=SIZE, noise=[recorded_noise(ref, 0), recorded_noise(ref, 1)],
               check_memory=False)
    assert out.settings["chunk_starts"] == [0, 3] and np.isfinite(out.chunks[-1].latents).all()
    assert_close(f"ascend_sv4d2_{amp_level}_video", out.views / 255.0, ref["video"] / 255.0, **FP16_VIDEO_BOUNDS)
