"""Outage and recovery with a real Milvus server process, and the app-managed local server."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from service.store import Item, StoreUnavailable, VectorStore
from tests.milvus_server import milvus_server

pytestmark = pytest.mark.slow
DIM = 8


def unit(seed: int) -> list[float]:
    v = np.random.default_rng(seed).standard_normal(DIM)
    return (v / np.linalg.norm(v)).tolist()


def test_unreachable_milvus_raises_store_unavailable_and_recovers_without_a_restart(tmp_path: Path) -> None:
    with milvus_server(tmp_path / "milvus") as server:
        store = VectorStore(server.uri, model="outage", dim=DIM, timeout_s=3)
        store.upsert("image", [Item("before", unit(1), metadata={"n": 1})])
        assert store.ping()

        server.stop()
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            store.search("image", [unit(1)], top_k=3)
        with pytest.raises(StoreUnavailable):
            store.upsert("image", [Item("during", unit(2))])
        assert not store.ping()
        assert time.monotonic() - started < 20, "failures must be fast, not hang on the outage"

        server.start()  # same data directory and port
        [hits] = store.search("image", [unit(1)], top_k=3)
        assert [h.id for h in hits] == ["before"] and hits[0].metadata == {"n": 1}
        store.upsert("image", [Item("after", unit(2))])
        assert store.get("image", "after") is not None
        assert store.ping()
        store.close()


def test_a_directory_uri_runs_a_local_server_whose_data_survives_the_app(tmp_path: Path) -> None:
    data_dir = tmp_path / "data" / "milvus"
    store = VectorStore(str(data_dir), model="local", dim=DIM)
    assert store.deployment == "local" and store.index.index_type == "HNSW"
    store.upsert("text", [Item("kept", unit(3), text="留下的字")])
    store.close()  # stops the server, as the app does at exit
    assert not (data_dir / "tuwen-milvus.pid").exists()

    reopened = VectorStore(str(data_dir), model="local", dim=DIM)
    got = reopened.get("text", "kept")
    assert got is not None and got.text == "留下的字"
    assert reopened.ping()
    reopened.close()
