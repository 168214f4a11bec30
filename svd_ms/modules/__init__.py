from .encoders.modules import GeneralConditioner  # noqa: F401  (sgm.modules.GeneralConditioner)
