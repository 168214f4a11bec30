"""User-facing errors. Each carries a one-line message naming the culprit."""


class SVDError(Exception):
    """Base class of every error a user can cause; the CLI prints str(e) and exits non-zero."""


class ConfigError(SVDError):
    pass


class InputError(SVDError):
    pass


class CheckpointError(SVDError):
    pass


class CheckpointMismatchError(CheckpointError):
    pass


class NonFiniteError(SVDError):
    pass


class LoRAError(CheckpointError):
    """A LoRA file that cannot be read or does not fit the model."""
