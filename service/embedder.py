"""Texts and image bytes → embeddings, through the dynamic batchers.

CPU work that is not inference (tokenising, image decoding and resizing, thumbnails) runs in a thread
pool, never on the event loop; inference runs in each batcher's own thread. Text batches are padded to
their longest member (the engines take dynamic length).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar, TypeVarTuple

import numpy as np
from PIL import Image

from service.batching import Batcher, BatchMetrics, Embedded
from service.preprocessing.image import ImageSpec, decode_image, preprocess
from service.preprocessing.text import TextTokenizer
from service.store.schema import DEFAULT_TENANT

if TYPE_CHECKING:
    from service.engines import Towers

_T = TypeVar("_T")
_Args = TypeVarTuple("_Args")


@dataclass(frozen=True)
class BatchSettings:
    max_batch_text: int
    max_batch_image: int
    wait_ms: float
    max_queue: int
    max_queue_per_tenant: int | None = None  # None = max_queue


@dataclass(frozen=True)
class Timing:
    """The slowest queue wait and inference among a request's inputs (for Server-Timing)."""

    queue_seconds: float
    inference_seconds: float

    @staticmethod
    def of(rows: Sequence[Embedded]) -> Timing:
        return Timing(max(r.queue_seconds for r in rows), max(r.inference_seconds for r in rows))


@dataclass(frozen=True)
class Embeddings:
    vectors: np.ndarray  # float32 [N, D], L2-normalised
    timing: Timing


@dataclass(frozen=True)
class DecodedImage:
    pixels: np.ndarray  # float32 [3, S, S], S = the image spec's size
    image: Image.Image


class Embedder:
    def __init__(
        self,
        towers: Towers,
        tokenizer: TextTokenizer,
        image_spec: ImageSpec,
        batch: BatchSettings,
        *,
        max_image_bytes: int,
        max_image_pixels: int,
        metrics: BatchMetrics | None = None,
        cpu_threads: int = 4,
        decode_min_side: int | None = None,
    ) -> None:
        """``decode_min_side``: large JPEGs are decoded at a reduced scale keeping both sides >= this
        (see ``decode_image``'s ``reduce_to``); None decodes every image in full."""
        self._tokenizer = tokenizer
        self._image_spec = image_spec
        self._decode_min_side = decode_min_side
        self._max_image_bytes = max_image_bytes
        self._max_image_pixels = max_image_pixels
        self._cpu = ThreadPoolExecutor(max_workers=cpu_threads, thread_name_prefix="tuwen-cpu")
        self.text_batcher: Batcher[list[int]] = Batcher(
            "text",
            lambda encoded: towers.text.embed(*tokenizer.pad(encoded)),
            max_batch=batch.max_batch_text,
            wait_ms=batch.wait_ms,
            max_queue=batch.max_queue,
            max_queue_per_tenant=batch.max_queue_per_tenant,
            metrics=metrics,
        )
        self.image_batcher: Batcher[np.ndarray] = Batcher(
            "image",
            lambda pixels: towers.image.embed(np.ascontiguousarray(np.stack(pixels))),
            max_batch=batch.max_batch_image,
            wait_ms=batch.wait_ms,
            max_queue=batch.max_queue,
            max_queue_per_tenant=batch.max_queue_per_tenant,
            metrics=metrics,
        )

    def start(self) -> None:
        self.text_batcher.start()
        self.image_batcher.start()

    async def stop(self) -> None:
        await self.text_batcher.stop()
        await self.image_batcher.stop()
        self._cpu.shutdown(wait=True)

    async def in_thread(self, fn: Callable[[*_Args], _T], *args: *_Args) -> _T:
        """Run blocking CPU work in the pool (thumbnails, decoding) without blocking the loop."""
        return await asyncio.get_running_loop().run_in_executor(self._cpu, fn, *args)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return [len(ids) for ids in self._tokenizer.encode(list(texts))]

    async def embed_texts(self, texts: Sequence[str], tenant: str = DEFAULT_TENANT) -> Embeddings:
        """``tenant``: whose turn the inputs take in the batch queue (tenants share batches fairly)."""
        encoded = await self.in_thread(self._tokenizer.encode, list(texts))
        rows = await self.text_batcher.submit(encoded, tenant)
        return Embeddings(np.stack([r.vector for r in rows]), Timing.of(rows))

    async def decode(self, data: bytes) -> DecodedImage:
        """Decode and preprocess one image off the loop; raises ImageError for bad input."""
        return await self.in_thread(self._decode, data)

    async def embed_decoded(self, images: Sequence[DecodedImage], tenant: str = DEFAULT_TENANT) -> Embeddings:
        rows = await self.image_batcher.submit([img.pixels for img in images], tenant)
        return Embeddings(np.stack([r.vector for r in rows]), Timing.of(rows))

    async def embed_images(
        self, datas: Sequence[bytes], tenant: str = DEFAULT_TENANT
    ) -> tuple[Embeddings, list[DecodedImage]]:
        decoded = list(await asyncio.gather(*(self.decode(d) for d in datas)))
        return await self.embed_decoded(decoded, tenant), decoded

    def _decode(self, data: bytes) -> DecodedImage:
        image = decode_image(
            data,
            max_bytes=self._max_image_bytes,
            max_pixels=self._max_image_pixels,
            reduce_to=self._decode_min_side,
        )
        return DecodedImage(preprocess([image], self._image_spec)[0], image)


def combine(text: np.ndarray, image: np.ndarray, text_weight: float) -> np.ndarray:
    """A text+image query: the weighted sum of the two unit vectors, normalised again."""
    mixed = text_weight * text + (1.0 - text_weight) * image
    norm = float(np.linalg.norm(mixed))
    if norm < 1e-12:  # opposite vectors with equal weight: fall back to the text alone
        return text
    return (mixed / norm).astype(np.float32)
