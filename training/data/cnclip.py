"""The Chinese-CLIP dataset format, so the public MUGE / Flickr30K-CN / COCO-CN releases work unchanged.

- `{split}_imgs.tsv`: `image_id<TAB>base64(image bytes)` per line;
- `{split}_texts.jsonl`: `{"text_id": int, "text": str, "image_ids": [int, ...]}` per line;
- the LMDB built from them (`python -m training.data.build_lmdb`): `lmdb/{split}/imgs` (key `str(image_id)` →
  base64, plus `num_images`) and `lmdb/{split}/pairs` (key `"0".."N-1"` → pickled `(image_id, text_id, text)`,
  plus `num_samples`).

A training sample is one (text, image) pair: a text with several image ids gives several samples.
"""

from __future__ import annotations

import base64
import binascii
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.data.records import DataError, LineIndex, OnError, report


@dataclass(frozen=True)
class TextRecord:
    text_id: int
    text: str
    image_ids: list[int]


def decode_base64(data: bytes | str, where: str) -> bytes:
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as error:
        raise DataError(f"{where}: the image is not valid base64 ({error})") from None


class TsvImages:
    """`{split}_imgs.tsv` indexed by image id (sorted id → byte offset arrays, no payload in memory)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.lines = LineIndex.build(self.path)
        ids = np.empty(len(self.lines), dtype=np.int64)
        with open(self.path, "rb") as handle:
            for i, offset in enumerate(self.lines.offsets):
                handle.seek(int(offset))
                head = handle.read(32).split(b"\t", 1)[0]
                try:
                    ids[i] = int(head)
                except ValueError:
                    raise DataError(
                        f"{self.lines.where(i)}: expected `image_id<TAB>base64` with an integer id, "
                        f"found {head[:20]!r}"
                    ) from None
        self._order = np.argsort(ids, kind="stable")
        self._sorted_ids = ids[self._order]
        self.ids = ids  # file order

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, image_id: int) -> bool:
        return self._find(image_id) is not None

    def _find(self, image_id: int) -> int | None:
        pos = int(np.searchsorted(self._sorted_ids, image_id))
        if pos < len(self._sorted_ids) and self._sorted_ids[pos] == image_id:
            return int(self._order[pos])
        return None

    def bytes_at(self, i: int) -> tuple[bytes, str]:
        """(image bytes, where) of the i-th line; raises DataError on a malformed line or bad base64."""
        where = self.lines.where(i)
        _, sep, payload = self.lines.read(i).partition(b"\t")
        if not sep or not payload:
            raise DataError(f"{where}: expected `image_id<TAB>base64`, found no image after the id")
        return decode_base64(payload, where), where

    def bytes_of(self, image_id: int) -> tuple[bytes, str]:
        i = self._find(image_id)
        if i is None:
            raise DataError(f"{self.path}: no image with id {image_id}")
        return self.bytes_at(i)


def read_texts(path: Path) -> tuple[LineIndex, list[TextRecord]]:
    """All text records of a split (for evaluation, where the queries are needed at once)."""
    lines = LineIndex.build(Path(path))
    return lines, [_text_record(lines, i) for i in range(len(lines))]


def _text_record(lines: LineIndex, i: int) -> TextRecord:
    record = lines.read_json(i)
    missing = [key for key in ("text_id", "text", "image_ids") if key not in record]
    if missing:
        raise DataError(f"{lines.where(i)}: missing field(s) {', '.join(missing)}")
    return TextRecord(int(record["text_id"]), str(record["text"]), [int(x) for x in record["image_ids"]])


class TsvPairs:
    """(text, image bytes) training pairs from `{split}_texts.jsonl` + `{split}_imgs.tsv`, read lazily."""

    def __init__(self, root: Path, split: str, on_error: OnError = "fail") -> None:
        root = Path(root)
        self.images = TsvImages(root / f"{split}_imgs.tsv")
        self.texts = LineIndex.build(root / f"{split}_texts.jsonl")
        text_rows, image_ids = [], []
        for i in range(len(self.texts)):
            record = _text_record(self.texts, i)
            for image_id in record.image_ids:
                if image_id in self.images:
                    text_rows.append(i)
                    image_ids.append(image_id)
                else:
                    report(
                        f"{self.texts.where(i)}: text {record.text_id} refers to image id {image_id}, "
                        f"which is not in {self.images.path}",
                        on_error,
                    )
        self._text_rows = np.asarray(text_rows, dtype=np.int64)
        self._image_ids = np.asarray(image_ids, dtype=np.int64)

    def __len__(self) -> int:
        return len(self._image_ids)

    def pair(self, i: int) -> tuple[str, bytes, str]:
        """(text, image bytes, where the image came from)."""
        record = _text_record(self.texts, int(self._text_rows[i]))
        image, where = self.images.bytes_of(int(self._image_ids[i]))
        return record.text, image, where


class LmdbPairs:
    """Training pairs from the Chinese-CLIP LMDB; environments open lazily in each worker process."""

    def __init__(self, split_dir: Path) -> None:
        self.split_dir = Path(split_dir)
        for name in ("imgs", "pairs"):
            if not (self.split_dir / name).is_dir():
                raise FileNotFoundError(
                    f"{self.split_dir / name} not found: build it with "
                    f"`python -m training.data.build_lmdb --data-dir DIR --splits SPLIT`"
                )
        self._envs: tuple | None = None
        with self._open("pairs") as env, env.begin() as txn:
            self._length = int(txn.get(b"num_samples"))

    def _open(self, name: str):
        import lmdb

        return lmdb.open(
            str(self.split_dir / name), readonly=True, lock=False, readahead=False, meminit=False
        )

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_envs": None}  # LMDB handles do not cross process boundaries

    def __len__(self) -> int:
        return self._length

    def close(self) -> None:
        if self._envs is not None:
            for env in self._envs:
                env.close()
            self._envs = None

    def pair(self, i: int) -> tuple[str, bytes, str]:
        if self._envs is None:
            self._envs = (self._open("pairs"), self._open("imgs"))
        pairs, images = self._envs
        where = f"{self.split_dir / 'pairs'}#{i}"
        with pairs.begin() as txn:
            raw = txn.get(str(i).encode())
        if raw is None:
            raise DataError(f"{where}: no such record")
        image_id, _text_id, text = pickle.loads(raw)  # the official format is a pickled tuple
        with images.begin() as txn:
            payload = txn.get(str(image_id).encode())
        if payload is None:
            raise DataError(f"{where}: image id {image_id} is not in {self.split_dir / 'imgs'}")
        return text, decode_base64(payload, f"{self.split_dir / 'imgs'}#{image_id}"), where
