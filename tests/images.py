"""Synthetic photographs for tests and benchmarks (no image files ship with the repository)."""

from __future__ import annotations

import numpy as np
from PIL import Image


def photo_like(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """Gradients plus sensor-like noise: smooth like a photo, unlike uniform noise (which has no low
    frequencies, so any downscaling or JPEG step would look worse on it than on real pictures)."""
    y, x = np.mgrid[0:height, 0:width]
    pixels = np.stack([x / width * 255, y / height * 255, (x + y) % 512 / 2], axis=-1)
    pixels += rng.normal(0, 12, pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
