"""Per-noise-level loss weights lambda(sigma) (sgm.modules.diffusionmodules.loss_weighting).

Each weighting maps a float32 Tensor of sigmas to a Tensor of weights of the same shape.
"""


class DiffusionLossWeighting:
    def __call__(self, sigma):
        raise NotImplementedError


class UnitWeighting(DiffusionLossWeighting):
    def __call__(self, sigma):
        return sigma * 0.0 + 1.0


class EDMWeighting(DiffusionLossWeighting):
    """lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma * sigma_data)^2, the inverse of the
    squared output scaling c_out^2 of EDM preconditioning, so every sigma contributes evenly."""

    def __init__(self, sigma_data: float = 0.5):
        self.sigma_data = float(sigma_data)

    def __call__(self, sigma):
        return (sigma ** 2 + self.sigma_data ** 2) / (sigma * self.sigma_data) ** 2


class VWeighting(EDMWeighting):
    """EDM weighting with sigma_data 1: the v-prediction weighting SVD trains with."""

    def __init__(self):
        super().__init__(sigma_data=1.0)


class EpsWeighting(DiffusionLossWeighting):
    def __call__(self, sigma):
        return sigma ** -2.0
