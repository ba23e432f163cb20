"""`tuwen load` by upserts records a shard as loaded only once its rows are upserted and its thumbnails
written (a unit: the store is a stand-in that keeps upserts in a dict, the thumbnail store a directory
whose writes can be made to fail; the real Milvus paths run in tests/service/test_index_load.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from service.config import Settings
from service.indexing import load
from service.indexing.shards import OutputDir, ShardResult, arrow_schema
from service.indexing.sources import Row
from service.thumbnails import LocalBackend, ThumbnailStore

DIM = 4


class Store:
    def __init__(self) -> None:
        self.rows: dict[str, list[str]] = {"image": [], "text": []}

    def upsert(self, kind: str, items: list[Any]) -> None:
        self.rows[kind] += [item.id for item in items]


class Backend(LocalBackend):
    """Files, except that writing ``broken``'s thumbnail fails."""

    broken = ""

    def put(self, key: str, data: bytes) -> None:
        if data == self.broken.encode():
            raise OSError(f"disk full writing {key}")
        super().put(key, data)


def index_dir(root: Path, shards: int, per_shard: int) -> OutputDir:
    out = OutputDir(root)
    ids = [f"p{i}" for i in range(shards * per_shard)]
    out.start([Row("image", i, i) for i in ids], per_shard, {"model": "m", "dim": DIM})
    for s in range(shards):
        chunk = ids[s * per_shard : (s + 1) * per_shard]
        vectors = np.ones((len(chunk), DIM), np.float32)
        table = pa.table(
            {
                "kind": ["image"] * len(chunk),
                "id": chunk,
                "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), DIM),
                "metadata": ["{}"] * len(chunk),
                "text": [None] * len(chunk),
                "thumbnail": [i.encode() for i in chunk],  # each thumbnail's bytes are its id
            },
            schema=arrow_schema(DIM),
        )
        out.finish_shard(ShardResult(s, len(chunk), len(chunk)), table)
    return out


@pytest.fixture
def thumbnails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Backend:
    backend = Backend(tmp_path / "thumbs")
    monkeypatch.setattr(load, "thumbnail_store", lambda settings: ThumbnailStore(backend.root, 64, backend))
    return backend


def ledger(out: OutputDir) -> dict[str, int]:
    (path,) = out.root.glob("_loaded-*.json")
    return dict(json.loads(path.read_text()))


def test_a_shard_whose_thumbnail_failed_is_not_recorded_and_a_rerun_finishes_it(
    tmp_path: Path, thumbnails: Backend
) -> None:
    out, store, settings = index_dir(tmp_path / "out", 3, 5), Store(), Settings(data_dir=tmp_path)
    thumbnails.broken = "p7"  # in the second shard
    with pytest.raises(OSError, match="disk full"):
        load.load(out, store, settings, "t", batch_size=2)  # type: ignore[arg-type]
    assert ledger(out) == {"0": 5}
    assert set(store.rows["image"]) >= {f"p{i}" for i in range(10)}  # the upserts came first

    thumbnails.broken = ""
    assert load.load(out, store, settings, "t", batch_size=2) == 15  # type: ignore[arg-type]
    assert ledger(out) == {"0": 5, "1": 5, "2": 5}
    stored = ThumbnailStore(thumbnails.root, 64, thumbnails)
    assert all(stored.get("t", f"p{i}") == f"p{i}".encode() for i in range(15))
