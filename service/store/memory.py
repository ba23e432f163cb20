"""``InMemoryStore``: a ``SearchIndex`` in a dict, for fast tests — Milvus's semantics without Milvus.

Ranking is exact inner product, best first (Milvus's FLAT; HNSW on a server is approximate, exact at
test sizes). Filters are evaluated on the Python values the way the Milvus server evaluates the expression
``compile_filter`` makes of them, as measured on Milvus Lite 3.2 and the Milvus 2.3.5 server by
tests/service/test_store_contract.py, which runs every case on this store and on both:

- A comparison with a metadata key that is missing, null, a list or an object is false — except ``ne``,
  which is exactly ``not eq``, so it is true there (the server's behaviour, still so in Milvus 2.6:
  milvus-io/milvus#47164). Milvus Lite treats a missing or null key as SQL NULL: ``ne`` is false there too.
- Values compare within their kind only: numbers (ints and floats alike: 5 == 5.0), strings (by code point,
  which is UTF-8 byte order, as Milvus compares) and booleans. ``true`` never equals 1 on the server;
  Milvus Lite conflates booleans with 0 and 1.

Input is checked by the same functions as ``VectorStore`` (service.store.validation). Thread-safe.
"""

from __future__ import annotations

import json
import operator
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.store.filters import AnyOf, Condition, Filter, metadata_path
from service.store.indexes import MILVUS_MAX_TOP_K
from service.store.milvus import Hit, Item
from service.store.schema import DEFAULT_TENANT, KINDS, Kind
from service.store.validation import check_item, check_search, check_tenant

_MISSING = object()
_ORDER: dict[str, Callable[[Any, Any], bool]] = {
    "lt": operator.lt,
    "lte": operator.le,
    "gt": operator.gt,
    "gte": operator.ge,
}


@dataclass(frozen=True)
class _Row:
    item: Item  # created_at set; metadata is this store's own JSON copy
    vector: np.ndarray  # float32 [dim], as Milvus keeps it


class InMemoryStore:
    """Items of one model (``model``, ``dim``) per kind and tenant, in memory; see the module docstring."""

    def __init__(self, *, model: str, dim: int, max_top_k: int = 1000) -> None:
        if dim <= 0:
            raise ValueError(f"dim must be positive, got {dim}")
        self.model = model
        self.dim = dim
        self.max_top_k = min(max_top_k, MILVUS_MAX_TOP_K)
        self._rows: dict[Kind, dict[tuple[str, str], _Row]] = {kind: {} for kind in KINDS}
        self._lock = threading.Lock()

    def ensure_collections(self) -> None:
        """Nothing to create."""

    def ping(self) -> bool:
        return True

    def close(self) -> None:
        """Keeps the items: like ``VectorStore``, a closed store still answers its next call."""

    def upsert(self, kind: Kind, items: Iterable[Item | Mapping[str, Any]]) -> int:
        now = int(time.time() * 1000)
        rows = [self._row(kind, item if isinstance(item, Item) else Item(**item), now) for item in items]
        with self._lock:
            table = self._rows[kind]
            for row in rows:
                table[(row.item.tenant, row.item.id)] = row
        return len(rows)

    def _row(self, kind: Kind, item: Item, now: int) -> _Row:
        vector = check_item(kind, item, self.dim)
        stored = Item(
            id=item.id,
            vector=(),  # kept once, in _Row.vector
            tenant=item.tenant,
            metadata=_json_copy(item.metadata),  # what Milvus's JSON field gives back (tuples → lists)
            text=item.text if kind == "text" else None,
            created_at=item.created_at if item.created_at is not None else now,
        )
        return _Row(stored, np.asarray(vector, dtype=np.float32))

    def get(self, kind: Kind, id: str, tenant: str = DEFAULT_TENANT) -> Item | None:
        check_tenant(tenant)
        with self._lock:
            row = self._rows[kind].get((tenant, id))
        if row is None:
            return None
        item = row.item
        return Item(
            id=item.id,
            vector=[float(x) for x in row.vector],
            tenant=item.tenant,
            metadata=_json_copy(item.metadata),
            text=item.text,
            created_at=item.created_at,
        )

    def delete(self, kind: Kind, id: str, tenant: str = DEFAULT_TENANT) -> bool:
        check_tenant(tenant)
        with self._lock:
            return self._rows[kind].pop((tenant, id), None) is not None

    def count(self, kind: Kind) -> int:
        with self._lock:
            return len(self._rows[kind])

    def search(
        self,
        kind: Kind,
        vectors: Sequence[Sequence[float]],
        top_k: int = 10,
        filter: Filter | None = None,
        tenant: str = DEFAULT_TENANT,
    ) -> list[list[Hit]]:
        queries = np.asarray(
            check_search(vectors, top_k, tenant, dim=self.dim, max_top_k=self.max_top_k), dtype=np.float32
        )
        with self._lock:
            rows = [row for (owner, _), row in self._rows[kind].items() if owner == tenant]
        rows = [row for row in rows if matches(filter, row.item)]
        if not rows:
            return [[] for _ in queries]
        scores = queries @ np.stack([row.vector for row in rows]).T
        results = []
        for query_scores in scores:
            best = np.argsort(-query_scores, kind="stable")[:top_k]
            results.append([_hit(rows[i].item, float(query_scores[i])) for i in best])
        return results


def matches(filter: Filter | None, item: Item) -> bool:
    """Whether ``item`` passes ``filter`` as the Milvus server would judge ``compile_filter(filter)``."""
    if filter is None:
        return True
    for clause in filter.all_of:
        if isinstance(clause, AnyOf):
            if not any(_holds(c, item) for c in clause.any_of):
                return False
        elif not _holds(clause, item):
            return False
    return True


def _holds(cond: Condition, item: Item) -> bool:
    actual = _value(item, cond.field)
    if cond.op == "in":
        assert isinstance(cond.value, list)
        return any(_equal(actual, v) for v in cond.value)
    if cond.op == "eq":
        return _equal(actual, cond.value)
    if cond.op == "ne":
        return not _equal(actual, cond.value)
    kind = _kind(actual)
    return kind is not None and kind == _kind(cond.value) and _ORDER[cond.op](actual, cond.value)


def _value(item: Item, field: str) -> object:
    path = metadata_path(field)
    if path is None:
        return getattr(item, field)  # id or created_at: always there
    value: object = item.metadata
    for key in path:
        if not isinstance(value, Mapping) or key not in value:
            return _MISSING
        value = value[key]
    return value


def _kind(value: object) -> str | None:
    """The kind a value compares within; None (missing, null, list, object) compares with nothing."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    return "string" if isinstance(value, str) else None


def _equal(actual: object, expected: object) -> bool:
    kind = _kind(actual)
    return kind is not None and kind == _kind(expected) and actual == expected


def _json_copy(metadata: Mapping[str, Any]) -> dict[str, Any]:
    copy: dict[str, Any] = json.loads(json.dumps(dict(metadata)))
    return copy


def _hit(item: Item, score: float) -> Hit:
    return Hit(
        id=item.id,
        score=score,
        metadata=_json_copy(item.metadata),
        text=item.text,
        created_at=item.created_at,
    )
