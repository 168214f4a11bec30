"""Synthetic training clips for the fine-tuning tests: smooth coloured patterns drifting over time."""
from pathlib import Path

import numpy as np


def write_video(path: Path, num_frames: int, seed: int, fps: int = 8, height: int = 80, width: int = 96):
    import imageio

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    tint = rng.uniform(0.2, 0.9, 3)
    frames = []
    for t in range(num_frames):  # smooth patterns drifting over time
        r = 0.5 + 0.5 * np.sin((xx + (3 + seed) * t) / 9.0)
        g = 0.5 + 0.5 * np.cos((yy - 2 * t) / (6.0 + seed))
        frame = np.stack([r * tint[0] + 0.1, g * tint[1], np.full_like(r, tint[2])], -1)
        frames.append((np.clip(frame, 0, 1) * 255).astype(np.uint8))
    imageio.mimwrite(str(path), frames, fps=fps, codec="libx264", macro_block_size=16)
