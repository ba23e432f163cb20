"""The embedded default: a directory URI runs a Milvus server the store manages itself.

(Outage and recovery against a server stopped and started under the store: tests/service/test_store.py.)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from service.store import Item, VectorStore

pytestmark = pytest.mark.slow
DIM = 8


def unit(seed: int) -> list[float]:
    v = np.random.default_rng(seed).standard_normal(DIM)
    return (v / np.linalg.norm(v)).tolist()


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
