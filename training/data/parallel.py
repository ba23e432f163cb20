"""Parallel text for AltCLIP's teacher learning: `{split}_parallel.jsonl`, one `{"teacher": ..., "student": ...}`
a line — a sentence the teacher reads (English for CLIP) and its translation (or itself) that the student
reads. Indexed by byte offset like the other formats; a broken line is reported with its `file:line`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch.utils.data import Dataset

from service.preprocessing.text import TextTokenizer
from training.data.dataset import MAX_CONSECUTIVE_BAD
from training.data.records import DataError, LineIndex, OnError, report


def parallel_path(root: Path, split: str) -> Path:
    return Path(root) / f"{split}_parallel.jsonl"


class ParallelText(Dataset):
    """(teacher text, student text) pairs; unusable lines are skipped (with a warning) or raised."""

    def __init__(self, path: Path, on_error: OnError = "fail") -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(
                f"{self.path} does not exist: parallel text is {{split}}_parallel.jsonl under data.root "
                "(python -m training.data.synthetic --parallel writes one)"
            )
        self.lines = LineIndex.build(self.path)
        self.on_error = on_error

    def __len__(self) -> int:
        return len(self.lines)

    def pair(self, i: int) -> tuple[str, str]:
        record = self.lines.read_json(i)
        teacher, student = record.get("teacher"), record.get("student")
        if not isinstance(teacher, str) or not isinstance(student, str) or not teacher or not student:
            raise DataError(
                f'{self.lines.where(i)}: expected {{"teacher": text, "student": text}} with non-empty texts, '
                f"found keys {sorted(record)}"
            )
        return teacher, student

    def __getitem__(self, index: int) -> tuple[str, str]:
        for attempt in range(MAX_CONSECUTIVE_BAD):  # the next good line keeps every rank's batch full
            try:
                return self.pair((index + attempt) % len(self))
            except DataError as error:
                report(str(error), self.on_error)
        raise DataError(f"{MAX_CONSECUTIVE_BAD} consecutive unreadable lines from index {index}; giving up")


class ParallelCollator:
    """Each side tokenised by its own model's tokenizer, padded to that model's context length."""

    def __init__(self, teacher: TextTokenizer, student: TextTokenizer) -> None:
        self.teacher, self.student = teacher, student

    def __call__(self, batch: Sequence[tuple[str, str]]) -> tuple[torch.Tensor, torch.Tensor]:
        return (
            _tokenize(self.teacher, [pair[0] for pair in batch]),
            _tokenize(self.student, [pair[1] for pair in batch]),
        )


def _tokenize(tokenizer: TextTokenizer, texts: list[str]) -> torch.Tensor:
    ids, _mask = tokenizer.pad(tokenizer.encode(texts, normalize=True), length=tokenizer.context_length)
    return torch.from_numpy(ids)
