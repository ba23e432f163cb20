"""How `tuwen load --method auto` picks between Milvus import tasks and upserts (a unit: the store is a
stand-in that only answers the deployment and the row counts; the import and upsert paths themselves run
against real Milvus servers in tests/service/test_index_load.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from service.indexing.load import IMPORT_MIN_ROWS, choose_method


@dataclass
class Store:
    deployment: str
    rows: dict[str, int] = field(default_factory=dict)

    def count(self, kind: str) -> int:
        return self.rows.get(kind, 0)


BIG = IMPORT_MIN_ROWS


@pytest.mark.parametrize(
    ("deployment", "stored", "import_to", "loading", "expected"),
    [
        ("local", {}, "", BIG, "import"),  # the embedded server reads the files from this disk
        ("local", {}, "", BIG - 1, "upsert"),  # too few rows to pay for an import's fixed cost
        ("local", {"text": 1}, "", BIG, "upsert"),  # an import would duplicate ids: upserts
        ("remote", {}, "", BIG, "upsert"),  # no place named where the server could read files
        ("remote", {}, "s3://milvus-bucket/import", BIG, "import"),
        ("remote", {"image": 5}, "s3://milvus-bucket/import", BIG, "upsert"),
        ("lite", {}, "", BIG, "upsert"),  # Milvus Lite has no import
    ],
)
def test_auto_imports_only_many_rows_into_empty_collections_milvus_can_read_files_for(
    deployment: str, stored: dict[str, int], import_to: str, loading: int, expected: str
) -> None:
    store: Any = Store(deployment, stored)
    assert choose_method(store, "auto", import_to, loading) == expected


@pytest.mark.parametrize("method", ["import", "upsert"])
def test_an_explicit_method_is_taken_as_asked(method: Any) -> None:
    store: Any = Store("local", {"image": 3})
    assert choose_method(store, method, "", 10) == method
