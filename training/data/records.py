"""Line-indexed readers for the dataset files: nothing but byte offsets is held in memory.

Every record keeps where it came from (`file:line`, or `file#key` for LMDB) so that a broken image or a
missing image id can be reported precisely, then skipped or raised as the config says.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

log = logging.getLogger(__name__)

OnError = Literal["skip", "fail"]


class DataError(ValueError):
    """A record that cannot be used; the message starts with `file:line`."""


def report(message: str, on_error: OnError) -> None:
    """Raise (fail) or warn (skip) — never silent."""
    if on_error == "fail":
        raise DataError(message + " (set data.on_error=skip to skip such records)")
    log.warning("skipping: %s", message)


@dataclass(frozen=True)
class LineIndex:
    """Byte offsets of the non-empty lines of a text file; line numbers are 1-based for messages."""

    path: Path
    offsets: np.ndarray  # int64 byte offset of each non-empty line
    line_numbers: np.ndarray  # int64 1-based line number of each

    @classmethod
    def build(cls, path: Path) -> LineIndex:
        offsets, numbers = [], []
        position = 0
        with open(path, "rb") as handle:
            for number, line in enumerate(handle, start=1):
                if line.strip():
                    offsets.append(position)
                    numbers.append(number)
                position += len(line)
        return cls(Path(path), np.asarray(offsets, dtype=np.int64), np.asarray(numbers, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.offsets)

    def where(self, i: int) -> str:
        return f"{self.path}:{int(self.line_numbers[i])}"

    def read(self, i: int) -> bytes:
        with open(self.path, "rb") as handle:
            handle.seek(int(self.offsets[i]))
            return handle.readline().rstrip(b"\r\n")

    def read_json(self, i: int) -> dict:
        try:
            record = json.loads(self.read(i))
        except json.JSONDecodeError as error:
            raise DataError(f"{self.where(i)}: not a JSON object ({error})") from None
        if not isinstance(record, dict):
            raise DataError(f"{self.where(i)}: expected a JSON object, got {type(record).__name__}")
        return record
