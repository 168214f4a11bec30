"""Live previews: a sampling step's denoised estimate shown as colours, without the VAE.

The four channels of the SD / SVD autoencoder's latents map to colour nearly linearly, so a fixed
4 x 3 matrix turns the estimate a sampler step makes (`StepInfo.denoised`, scaled as the UNet sees
it) into a recognisable picture at 1/8 of the video's size, for one small matrix product per frame
instead of a VAE decode. Not the video: no detail, and colours only approximate.

The matrix for real SVD weights is ComfyUI's for the SD 1.x latent space, which ComfyUI also uses
for SVD (`comfy/supported_models.py`: `SVD_img2vid.latent_format = latent_formats.SD15`; the
numbers are `comfy/latent_formats.py`, `SD15.latent_rgb_factors`, no bias). Like ComfyUI, the
product is read as RGB in [-1, 1]. For other weights, `fit_latent_colours` fits a map by least
squares from latents and the pictures they encode.
"""
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from ..errors import InputError

LATENT_CHANNELS = 4


@dataclass(frozen=True)
class LatentColours:
    """RGB in [-1, 1] = latents (channels last) @ weights + bias; `source` says where the numbers
    come from."""
    weights: np.ndarray  # (4, 3)
    bias: np.ndarray     # (3,)
    source: str

    def rgb(self, latents) -> np.ndarray:
        """(T, 4, h, w) latents -> float32 (T, h, w, 3), not clipped."""
        z = as_latent_frames(latents)
        return (np.einsum("tchw,cr->thwr", z, self.weights.astype(np.float32), optimize=True)
                + self.bias.astype(np.float32))


SD_LATENT_COLOURS = LatentColours(
    weights=np.array([[0.3512, 0.2297, 0.3227],
                      [0.3250, 0.4974, 0.2350],
                      [-0.2829, 0.1762, 0.2721],
                      [-0.2120, -0.2616, -0.7177]], np.float32),
    bias=np.zeros(3, np.float32),
    source="ComfyUI comfy/latent_formats.py SD15.latent_rgb_factors (the latent format ComfyUI uses for SVD)")


def as_latent_frames(latents) -> np.ndarray:
    """A MindSpore Tensor or array of latents as float32 (T, 4, h, w); one image (4, h, w) is one frame."""
    z = latents.asnumpy() if hasattr(latents, "asnumpy") else np.asarray(latents)
    if z.ndim == 3:
        z = z[None]
    if z.ndim != 4 or z.shape[1] != LATENT_CHANNELS:
        raise InputError(f"a preview needs latents of shape (frames, {LATENT_CHANNELS}, h, w), got {z.shape}")
    return z.astype(np.float32, copy=False)


def preview_frames(latents, colours: LatentColours = SD_LATENT_COLOURS) -> np.ndarray:
    """(T, 4, h, w) latents -> uint8 (T, h, w, 3) frames, 1/8 of the video's size."""
    rgb = colours.rgb(latents)
    # [-1, 1] -> [0, 255], rounded as media.to_uint8 rounds the real video's frames.
    return np.clip(np.rint((rgb + 1.0) * 127.5), 0, 255).astype(np.uint8)


def preview_strip(frames: np.ndarray, max_frames: int = 8, columns: Optional[int] = None, scale: int = 2,
                  gap: int = 2, background: int = 32) -> np.ndarray:
    """A small image of up to `max_frames` frames picked evenly (first and last included), in rows
    of `columns` (default: one row), each enlarged `scale` times by repeating pixels (what the
    latent grid holds, nothing invented), `gap` pixels apart. uint8 (H, W, 3)."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise InputError(f"preview_strip needs uint8 frames (T, h, w, 3), got {frames.dtype} {frames.shape}")
    if max_frames < 1 or scale < 1 or gap < 0:
        raise InputError(f"max_frames={max_frames} and scale={scale} must be >= 1, gap={gap} >= 0")
    t = frames.shape[0]
    picked = frames[np.unique(np.rint(np.linspace(0, t - 1, min(t, max_frames))).astype(int))]
    picked = picked.repeat(scale, axis=1).repeat(scale, axis=2)
    n, h, w, _ = picked.shape
    cols = min(columns or n, n)
    rows = -(-n // cols)
    out = np.full((rows * h + (rows - 1) * gap, cols * w + (cols - 1) * gap, 3), background, np.uint8)
    for k, frame in enumerate(picked):
        r, c = divmod(k, cols)
        out[r * (h + gap):r * (h + gap) + h, c * (w + gap):c * (w + gap) + w] = frame
    return out


def fit_latent_colours(latents: Any, images: np.ndarray, source: str) -> LatentColours:
    """The least-squares map (with bias) from latents (N, 4, h, w) to the images (N, 3, H, W) in
    [-1, 1] they encode, each image averaged over the 8 x 8 (H/h) pixels of one latent."""
    z = as_latent_frames(latents)
    images = np.asarray(images, np.float64)
    n, _, h, w = z.shape
    f = images.shape[2] // h
    if images.shape[0] != n or images.shape[1] != 3 or images.shape[2:] != (h * f, w * f):
        raise InputError(f"images {images.shape} do not match latents {z.shape}")
    pooled = images.reshape(n, 3, h, f, w, f).mean(axis=(3, 5))
    x = np.concatenate([z.transpose(0, 2, 3, 1).reshape(-1, LATENT_CHANNELS), np.ones((n * h * w, 1))], axis=1)
    y = pooled.transpose(0, 2, 3, 1).reshape(-1, 3)
    solution, *_ = np.linalg.lstsq(x.astype(np.float64), y, rcond=None)
    return LatentColours(solution[:LATENT_CHANNELS].astype(np.float32), solution[LATENT_CHANNELS].astype(np.float32),
                         source)
