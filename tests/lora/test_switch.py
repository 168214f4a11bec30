"""svd_ms.lora.switch: changing the merged adapters of a built UNet gives, bit for bit, the weights
merge_lora gives a freshly loaded UNet with the same files (what a model built with `lora=` has),
and switching back to no adapter restores the base weights exactly."""
import mindspore as ms
import numpy as np
import pytest
from conftest import TINY_CONFIG
from lora_adapters import write_adapter
from omegaconf import OmegaConf

from svd_ms.errors import LoRAError
from svd_ms.lora.merge import merge_lora
from svd_ms.lora.switch import LoRASwitch
from svd_ms.util import instantiate_from_config


def tiny_unet(base=None):
    """The tiny reference UNet; with `base`, holding exactly those weights (a freshly loaded model)."""
    ms.set_seed(0)
    unet = instantiate_from_config(OmegaConf.load(TINY_CONFIG).model.params.network_config)
    unet.set_train(False)
    for name, p in unet.parameters_and_names():
        if base is not None:
            p.set_data(ms.Tensor(base[name], p.dtype))
    return unet


def values(unet):
    return {n: p.asnumpy().copy() for n, p in unet.parameters_and_names()}


def differing(a, b):
    return sorted(n for n in a if not np.array_equal(a[n], b[n]))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("adapters")
    unet = tiny_unet()
    return write_adapter(folder / "a.safetensors", unet, 1), write_adapter(folder / "b.safetensors", unet, 2, every=2)


def test_switching_equals_a_fresh_merge_and_back_to_base(files):
    a, b = files
    unet = tiny_unet()
    base = values(unet)
    switch = LoRASwitch(unet)
    wanted_sets = [[(a, 1.0)], [(a, 0.5), (b, 1.0)], [(b, -0.7)], [], [(a, 1.0)]]
    for wanted in wanted_sets:
        switch.use(wanted)
        fresh = tiny_unet(base)
        if wanted:
            merge_lora(fresh, wanted)
        now, expected = values(unet), values(fresh)
        changed = differing(base, now)
        print(f"[lora switch] {[(p.rsplit('/', 1)[-1], s) for p, s in wanted]}: {len(changed)} weights differ "
              f"from the base; differing from a fresh merge: {len(differing(expected, now))} (bound 0)")
        assert differing(expected, now) == []
        assert (len(changed) > 0) == bool(wanted)  # the adapters did change the weights
    assert switch.active == [(a, 1.0)]


def test_a_bad_file_leaves_the_base_weights(files, tmp_path):
    a, _ = files
    unet = tiny_unet()
    base = values(unet)
    switch = LoRASwitch(unet)
    switch.use([(a, 1.0)])
    with pytest.raises(LoRAError, match="absent.safetensors"):
        switch.use([(a, 1.0), (str(tmp_path / "absent.safetensors"), 1.0)])
    assert differing(base, values(unet)) == [] and switch.active == []  # refused: the base, nothing merged
    switch.use([(a, 1.0)])
    assert differing(base, values(unet)) != []
