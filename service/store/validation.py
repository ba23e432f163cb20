"""What every store checks before it writes or searches, defined once: Milvus (``VectorStore``) and the
in-memory store (``InMemoryStore``) refuse the same input with the same ``InvalidItem``."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from service.store.errors import InvalidItem
from service.store.schema import TEXT_MAX_BYTES, Kind, id_problem, metadata_problem, tenant_problem

if TYPE_CHECKING:
    from service.store.milvus import Item


def check_tenant(tenant: object) -> None:
    if (problem := tenant_problem(tenant)) is not None:
        raise InvalidItem(problem)


def check_item(kind: Kind, item: Item, dim: int) -> list[float]:
    """Refuse an item that cannot be stored as ``kind``; returns its vector as floats."""
    check_tenant(item.tenant)
    if (problem := id_problem(item.id)) is not None:
        raise InvalidItem(f"{problem}: {str(item.id)[:40]!r}")
    if (problem := metadata_problem(dict(item.metadata))) is not None:
        raise InvalidItem(f"item {item.id!r}: {problem}")
    vector = [float(x) for x in item.vector]
    if len(vector) != dim or not all(math.isfinite(x) for x in vector):
        raise InvalidItem(f"item {item.id!r}: vector must be {dim} finite floats, got {len(vector)}")
    if kind == "text" and (item.text is None or len(item.text.encode()) > TEXT_MAX_BYTES):
        raise InvalidItem(f"text item {item.id!r} needs a text of at most {TEXT_MAX_BYTES} bytes")
    return vector


def check_search(
    vectors: Sequence[Sequence[float]], top_k: int, tenant: str, *, dim: int, max_top_k: int
) -> list[list[float]]:
    """Refuse a search no store could answer; returns the query vectors as floats."""
    check_tenant(tenant)
    if not 1 <= top_k <= max_top_k:
        raise InvalidItem(f"top_k must be between 1 and {max_top_k}, got {top_k}")
    queries = [[float(x) for x in v] for v in vectors]
    if not queries or any(len(q) != dim for q in queries):
        raise InvalidItem(f"search needs one or more query vectors of dim {dim}")
    return queries
