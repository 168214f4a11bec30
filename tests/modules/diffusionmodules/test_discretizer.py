import numpy as np

from conftest import assert_close
from svd_ms.modules.diffusionmodules.discretizer import EDMDiscretization


def test_edm_sigmas(reference):
    disc = EDMDiscretization(sigma_max=700.0)
    assert_close("sigmas", disc(4), reference["sigmas"], rel=1e-6)
    assert_close("sigmas_25", disc(25), reference["sigmas_25"], rel=1e-6)
    assert disc(4)[-1] == 0.0 and np.all(np.diff(disc(25)) < 0)
