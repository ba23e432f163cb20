"""The training Dataset over any pair source, and the collator that tokenises and stacks a batch.

Images are decoded and preprocessed in the DataLoader workers with the shared
`service.preprocessing.image`; texts are tokenised per batch with the shared tokenizer.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch.utils.data import Dataset

from service.preprocessing.image import ImageError, ImageSpec, decode_image, preprocess
from service.preprocessing.text import TextTokenizer
from training.data.cnclip import LmdbPairs, TsvPairs
from training.data.jsonl import JsonlPairs
from training.data.records import DataError, OnError, report

# A broken record is replaced by the next readable one so every rank keeps the same batch size (the
# all-gather in the loss needs equal shards); this bounds how far we look before giving up.
MAX_CONSECUTIVE_BAD = 64


class PairSource(Protocol):
    def __len__(self) -> int: ...
    def pair(self, i: int) -> tuple[str, bytes, str]: ...


def open_pairs(fmt: str, root: Path, split: str, on_error: OnError) -> PairSource:
    root = Path(root)
    if fmt == "cnclip-tsv":
        return TsvPairs(root, split, on_error)
    if fmt == "cnclip-lmdb":
        split_dir = root / "lmdb" / split if (root / "lmdb" / split).is_dir() else root / split
        return LmdbPairs(split_dir)
    if fmt == "jsonl":
        return JsonlPairs(root / f"{split}.jsonl")
    raise ValueError(f"unknown data format {fmt!r}: use cnclip-tsv, cnclip-lmdb or jsonl")


def load_pixels(data: bytes, spec: ImageSpec, where: str) -> np.ndarray:
    try:
        return preprocess([decode_image(data)], spec)[0]
    except ImageError as error:
        raise DataError(f"{where}: {error}") from None


class ImageTextDataset(Dataset):
    """(pixels float32 [3,S,S], text) pairs; bad records are reported and skipped or raised."""

    def __init__(self, source: PairSource, spec: ImageSpec, on_error: OnError = "fail") -> None:
        self.source, self.spec, self.on_error = source, spec, on_error

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> tuple[np.ndarray, str]:
        for attempt in range(MAX_CONSECUTIVE_BAD):
            i = (index + attempt) % len(self.source)
            try:
                text, image, where = self.source.pair(i)
                return load_pixels(image, self.spec, where), text
            except DataError as error:
                report(str(error), self.on_error)
        raise DataError(f"{MAX_CONSECUTIVE_BAD} consecutive unreadable records from index {index}; giving up")


class Collator:
    """Stacks pixels and tokenises texts (normalised as in official training) padded to the context length."""

    def __init__(self, tokenizer: TextTokenizer) -> None:
        self.tokenizer = tokenizer

    def __call__(self, batch: Sequence[tuple[np.ndarray, str]]) -> tuple[torch.Tensor, torch.Tensor]:
        pixels = torch.from_numpy(np.stack([item[0] for item in batch]))
        return pixels, self.tokenize([item[1] for item in batch])

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        encoded = self.tokenizer.encode(list(texts), normalize=True)
        ids, _mask = self.tokenizer.pad(encoded, length=self.tokenizer.context_length)
        return torch.from_numpy(ids)
