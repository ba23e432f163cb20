"""How `tuwen load --method auto` picks between Milvus import tasks and upserts (a unit: the store is a
stand-in that only answers the deployment and the row counts; the import and upsert paths themselves run
against real Milvus servers in tests/service/test_index.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from service.indexing.load import choose_method


@dataclass
class Store:
    deployment: str
    rows: dict[str, int] = field(default_factory=dict)

    def count(self, kind: str) -> int:
        return self.rows.get(kind, 0)


@pytest.mark.parametrize(
    ("deployment", "rows", "import_to", "expected"),
    [
        ("local", {}, "", "import"),  # the embedded server reads the files from this disk
        ("local", {"text": 1}, "", "upsert"),  # an import would duplicate ids: upserts
        ("remote", {}, "", "upsert"),  # no place named where the server could read files
        ("remote", {}, "s3://milvus-bucket/import", "import"),
        ("remote", {"image": 5}, "s3://milvus-bucket/import", "upsert"),
        ("lite", {}, "", "upsert"),  # Milvus Lite has no import
    ],
)
def test_auto_imports_only_into_empty_collections_milvus_can_read_files_for(
    deployment: str, rows: dict[str, int], import_to: str, expected: str
) -> None:
    store: Any = Store(deployment, rows)
    assert choose_method(store, "auto", import_to) == expected


@pytest.mark.parametrize("method", ["import", "upsert"])
def test_an_explicit_method_is_taken_as_asked(method: Any) -> None:
    store: Any = Store("local", {"image": 3})
    assert choose_method(store, method, "") == method
