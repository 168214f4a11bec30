"""Will a run fit? A coarse estimate of the memory a generation needs beyond the model's weights,
checked against what the machine has before anything large is allocated.

The estimate is deliberately simple and errs high: the UNet's activations (the guider's copies x
frames x the first level's channels x latent pixels, times 16 for the resblock intermediates and
the skip connections every level keeps), one attention chunk (the attention code processes at
most ATTENTION_CHUNK_BYTES of scores at a time), the VAE decoder's full-resolution activations
for one decode chunk (128 channels, times 8), and the video on the host (float frames, the clamped
video and the 8-bit copy).
"""
from typing import Dict, Optional

from ..errors import InputError
from .memory import available_host_bytes, format_bytes

# available_host_bytes is THE free-memory rule (runtime/memory.py); it is named here too because
# callers check a run with check_fits(estimate, available_host_bytes(), ...).
__all__ = ["ATTENTION_CHUNK_BYTES", "estimate_generation_bytes", "check_fits", "available_host_bytes"]

FLOAT = 4
UNET_ACTIVATION_FACTOR = 16
VAE_DECODER_CHANNELS = 128
VAE_ACTIVATION_FACTOR = 8
# Largest float32 score tensor (bytes) the math attention (svd_ms/modules/attention.py) forms at
# once; larger problems are processed in chunks of the batch axis.
ATTENTION_CHUNK_BYTES = 1 << 30


def attention_scores_bytes(num_frames: int, latent_pixels: int, model_channels: int, num_copies: int) -> int:
    """The largest float32 score tensor the math attention forms at once: the first level's spatial
    self-attention over every frame (heads of 64 channels), which chunking caps at ATTENTION_CHUNK_BYTES."""
    heads = max(1, model_channels // 64)
    return min(ATTENTION_CHUNK_BYTES, num_copies * num_frames * heads * latent_pixels * latent_pixels * FLOAT)


def estimate_generation_bytes(num_frames: int, height: int, width: int, decode_chunk_size: int,
                              model_channels: int = 320, num_copies: int = 2) -> Dict[str, int]:
    latent_pixels = (height // 8) * (width // 8)
    parts = {
        "unet activations": num_copies * num_frames * model_channels * latent_pixels * FLOAT * UNET_ACTIVATION_FACTOR,
        "attention": attention_scores_bytes(num_frames, latent_pixels, model_channels, num_copies),
        "vae decode": decode_chunk_size * VAE_DECODER_CHANNELS * height * width * FLOAT * VAE_ACTIVATION_FACTOR,
        "video on the host": num_frames * 3 * height * width * (FLOAT * 2 + 1),
    }
    parts["total"] = sum(parts.values())
    return parts


def check_fits(estimate: Dict[str, int], available: Optional[int], what: str) -> None:
    """InputError with the estimate and the limit when `estimate` cannot fit in `available`
    (bytes a run may take, as runtime.memory.available_host_bytes gives them; None: unknown)."""
    if available is None or estimate["total"] <= available:
        return
    biggest = max((k for k in estimate if k != "total"), key=estimate.get)
    raise InputError(f"{what} needs about {format_bytes(estimate['total'])} of memory (mostly {biggest}, "
                     f"{format_bytes(estimate[biggest])}), more than the {format_bytes(available)} this "
                     f"machine can give it; use fewer frames, a smaller --width/--height or a smaller "
                     f"--SVD.decode_chunk_size")
