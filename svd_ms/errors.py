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


class CheckpointMemoryError(CheckpointError):
    """The host has too little memory for a checkpoint's tensors; the message gives the sizes."""


class ConvertError(SVDError):
    """svd_tools/convert.py refuses: its input, config or output cannot be used as given."""
