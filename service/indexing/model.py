"""The model as the indexer uses it: the ONE place that calls the bundle, preprocessing and engine APIs.

Everything here mirrors what the service does for the same input (service/app.py builds its Embedder the
same way from the same ``Settings``), so `tuwen index` stores the vectors and thumbnails that POST /items
would: the same decode limits, the same reduced-scale JPEG decode, the same towers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from service.config import Settings
from service.thumbnails import render_thumbnail

if TYPE_CHECKING:
    from service.engines import Towers
    from service.preprocessing.image import ImageSpec
    from service.preprocessing.text import TextTokenizer


@dataclass(frozen=True)
class ModelInfo:
    name: str
    dim: int
    image_size: int
    tower_bytes: int  # both towers' graphs, the largest precision of each: what a copy of them holds


def model_info(settings: Settings) -> ModelInfo:
    from service.bundle import TOWERS, Bundle

    bundle = Bundle.load(settings.bundle)
    tower_bytes = sum(
        max((bundle.file(t, p).stat().st_size for p in bundle.precisions(t)), default=0) for t in TOWERS
    )
    return ModelInfo(bundle.model_name, bundle.embed_dim, bundle.image_spec().size, tower_bytes)


def decode_min_side(settings: Settings, image_size: int) -> int:
    """The service's choice (service/app.py): 2x the model input, or the thumbnail size if larger."""
    return max(2 * image_size, settings.thumbnail_size)


class Preprocessor:
    """Image bytes → (pixels uint8 [S, S, 3] before normalisation, thumbnail JPEG); raises ImageError like
    the service. ``Encoder.images`` normalises: uint8 is a quarter of the bytes to ship between them."""

    def __init__(self, settings: Settings) -> None:
        from service.bundle import Bundle

        self._settings = settings
        self._spec: ImageSpec = Bundle.load(settings.bundle, verify_hashes=False).image_spec()
        self._reduce_to = decode_min_side(settings, self._spec.size)

    def __call__(self, data: bytes) -> tuple[np.ndarray, bytes]:
        from service.preprocessing.image import decode_image, resize_crop

        image = decode_image(
            data,
            max_bytes=self._settings.max_upload_bytes,
            max_pixels=self._settings.max_image_pixels,
            reduce_to=self._reduce_to,
        )
        return resize_crop(image, self._spec), render_thumbnail(image, self._settings.thumbnail_size)


class Encoder:
    """The bundle's two towers, loaded and batched as the service loads and batches them: backend,
    precision, threads, and at most ``max_batch_image`` images / ``max_batch_text`` texts per tower call
    (a CPU is faster in small batches: ViT-B-16 ~10% in 16s than in 32s on 2 cores, docs/benchmarks.md)."""

    def __init__(self, settings: Settings) -> None:
        from service.bundle import Bundle
        from service.engines import load_towers

        bundle = Bundle.load(settings.bundle)
        self.tokenizer: TextTokenizer = bundle.tokenizer()
        self.image_spec: ImageSpec = bundle.image_spec()
        self.max_images, self.max_texts = settings.max_batch_image, settings.max_batch_text
        self.towers: Towers = load_towers(
            bundle,
            backend=settings.backend,
            precision=settings.precision,
            threads=settings.intra_op_threads,
            spin_wait=settings.ort_spin_wait,
            max_batch=max(self.max_images, self.max_texts),
            engine_cache_dir=settings.engine_cache_dir,
        )

    def images(self, pixels: np.ndarray) -> np.ndarray:
        """Vectors of ``Preprocessor``'s uint8 [N, S, S, 3] pixels."""
        from service.preprocessing.image import normalize

        return np.concatenate(
            [
                np.asarray(
                    self.towers.image.embed(normalize(pixels[i : i + self.max_images], self.image_spec))
                )
                for i in range(0, len(pixels), self.max_images)
            ]
        ).astype(np.float32, copy=False)

    def texts(self, texts: list[str]) -> np.ndarray:
        chunks = []
        for i in range(0, len(texts), self.max_texts):
            ids, mask = self.tokenizer.pad(self.tokenizer.encode(texts[i : i + self.max_texts]))
            chunks.append(np.asarray(self.towers.text.embed(ids, mask)))
        return np.concatenate(chunks).astype(np.float32, copy=False)
