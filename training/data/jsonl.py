"""A plain JSONL of `{"image": path, "text": ...}` with image files next to it (paths relative to the file)."""

from __future__ import annotations

from pathlib import Path

from training.data.records import DataError, LineIndex


class JsonlPairs:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.lines = LineIndex.build(self.path)

    def __len__(self) -> int:
        return len(self.lines)

    def record(self, i: int) -> tuple[str, Path, str]:
        """(text, image path, where) of the i-th line."""
        where = self.lines.where(i)
        record = self.lines.read_json(i)
        if not isinstance(record.get("image"), str) or not isinstance(record.get("text"), str):
            raise DataError(f'{where}: expected {{"image": path, "text": str}}, found keys {sorted(record)}')
        return record["text"], self.path.parent / record["image"], where

    def pair(self, i: int) -> tuple[str, bytes, str]:
        text, image_path, where = self.record(i)
        try:
            return text, image_path.read_bytes(), where
        except OSError as error:
            raise DataError(f"{where}: cannot read image {image_path} ({error.strerror})") from None
