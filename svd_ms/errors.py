"""The one error hierarchy of svd-ms. Each error a user can cause carries a one-line message that
names the culprit; the tools print it after "error: " and exit non-zero, without a traceback."""


class SVDError(Exception):
    """Base class of every error a user can cause."""


class UsageError(SVDError):
    """Flags or environment that let nothing run (the CLIs exit 2)."""


class ConfigError(SVDError):
    pass


class InputError(SVDError):
    pass


class ParamError(InputError):
    """A generation parameter out of its range; `field` names it so that a CLI can print its flag."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


class ImageError(InputError):
    """One input image cannot be used; the other images of a job still run."""


class CheckpointError(SVDError):
    pass


class CheckpointMismatchError(CheckpointError):
    pass


class CheckpointMemoryError(CheckpointError):
    """The host has too little memory for a checkpoint's tensors; the message gives the sizes."""


class ConvertError(SVDError):
    """svd_tools/convert.py refuses: its input, config or output cannot be used as given."""


class NonFiniteError(SVDError):
    pass


class GenerationCancelled(SVDError):
    """A step callback asked the pipeline to stop."""


class DataError(SVDError):
    """Training data that cannot be used at all."""


class VideoError(ImageError):
    """One input video cannot be used (unreadable, too short, too large); the other inputs of a job still run."""


class LoRAError(CheckpointError):
    """A LoRA file that cannot be read or does not fit the model."""


_FRAMEWORK_MARKERS = ("\n-----", "- C++ Call Stack", "- Python Call Stack", "\nTraceback")


def one_line(err: BaseException, limit: int = 400) -> str:
    """An error as one line. Our own errors are already one line; others (framework, OS) are cut
    before their call stacks, prefixed with their type and kept under `limit` characters."""
    ours = isinstance(err, SVDError)
    text = str(err)
    if not ours:
        for marker in _FRAMEWORK_MARKERS:
            cut = text.find(marker)
            if cut > 0:
                text = text[:cut]
    text = " ".join(text.split())
    if not text:
        return type(err).__name__
    if not ours:
        text = f"{type(err).__name__}: {text}"
        if len(text) > limit:
            text = text[:limit - 3].rstrip() + "..."
    return text

