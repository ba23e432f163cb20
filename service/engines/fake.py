"""A deterministic fake pair of towers for fast tests: no model, no ONNX Runtime, same shapes.

Each input gets a fixed unit vector: the sha256 of what its tower sees (a text's token ids under its
attention mask, an image's preprocessed pixel bytes) seeds a numpy generator that draws a random direction.
So the same text or image always gives the same vector, in any batch (padding is ignored), and different
inputs give independent directions — near-orthogonal (|cos| ~ 1/sqrt(dim)) — so a search with an ingested
item's own text or image finds it first, at score 1, and nothing else comes close.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from service.engines import Towers

DEFAULT_DIM = 64
DEFAULT_IMAGE_SIZE = 32


def unit_vector(data: bytes, dim: int) -> np.ndarray:
    """The float32 unit vector ``data`` stands for."""
    seed = int.from_bytes(hashlib.sha256(data).digest()[:8], "little")
    vector = np.random.default_rng(seed).standard_normal(dim)
    return (vector / np.linalg.norm(vector)).astype(np.float32)


def text_vector(ids: Sequence[int], dim: int = DEFAULT_DIM) -> np.ndarray:
    """The fake text tower's vector for one text's token ids (``[CLS] … [SEP]``, unpadded)."""
    return unit_vector(b"text\0" + np.asarray(ids, dtype="<i8").tobytes(), dim)


def image_vector(pixels: np.ndarray, dim: int = DEFAULT_DIM) -> np.ndarray:
    """The fake image tower's vector for one preprocessed image (float32 [3, S, S])."""
    return unit_vector(b"image\0" + np.ascontiguousarray(pixels, dtype="<f4").tobytes(), dim)


class FakeTextEngine:
    def __init__(self, dim: int = DEFAULT_DIM) -> None:
        self.dim = dim
        self.batches = 0  # how many calls: tests of batching read it

    def embed(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        if input_ids.ndim != 2 or input_ids.shape != attention_mask.shape:
            raise ValueError(
                f"input_ids {input_ids.shape} and attention_mask {attention_mask.shape}: want [B, L]"
            )
        self.batches += 1
        rows = [
            text_vector(ids[mask.astype(bool)], self.dim)
            for ids, mask in zip(input_ids, attention_mask, strict=True)
        ]
        return np.stack(rows) if rows else np.zeros((0, self.dim), np.float32)


class FakeImageEngine:
    def __init__(self, dim: int = DEFAULT_DIM, image_size: int = DEFAULT_IMAGE_SIZE) -> None:
        self.dim = dim
        self.image_size = image_size
        self.batches = 0

    def embed(self, pixel_values: np.ndarray) -> np.ndarray:
        # A real graph refuses another input size: so does the fake, or a wrong ImageSpec would go unseen.
        if pixel_values.shape[1:] != (3, self.image_size, self.image_size):
            raise ValueError(
                f"pixel_values {pixel_values.shape}: want [B, 3, {self.image_size}, {self.image_size}]"
            )
        self.batches += 1
        rows = [image_vector(pixels, self.dim) for pixels in pixel_values]
        return np.stack(rows) if rows else np.zeros((0, self.dim), np.float32)


def fake_towers(dim: int = DEFAULT_DIM, image_size: int = DEFAULT_IMAGE_SIZE) -> Towers:
    """What ``load_towers`` returns, with the fake engines."""
    return Towers(
        text=FakeTextEngine(dim),
        image=FakeImageEngine(dim, image_size),
        backend="fake",
        providers=["FakeExecutionProvider"],
        precision="fp32",
        image_size=image_size,
    )
