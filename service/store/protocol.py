"""``SearchIndex``: what the API needs of a vector store — the public surface of ``VectorStore``.

Two implementations: ``VectorStore`` (Milvus: Lite, the local server, Standalone/Distributed) and
``InMemoryStore`` (service.store.memory, for fast tests). tests/service/test_store_contract.py runs the
same cases on all of them, so the in-memory one keeps Milvus's semantics.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol, runtime_checkable

from service.store.filters import Filter
from service.store.milvus import Hit, Item
from service.store.schema import DEFAULT_TENANT, Kind


@runtime_checkable
class SearchIndex(Protocol):
    """Items of one model (``model``, vectors of ``dim``) in two kinds, ``image`` and ``text``, per tenant.

    Errors: ``InvalidItem`` for input no store could take (bad tenant, id, vector, text or top_k),
    ``StoreUnavailable`` when the backend cannot be reached (the next call retries).
    """

    @property
    def model(self) -> str: ...

    @property
    def dim(self) -> int: ...

    @property
    def max_top_k(self) -> int: ...

    def ensure_collections(self) -> None:
        """Create or check what the store needs before the first read or write."""
        ...

    def ping(self) -> bool:
        """True when the backend answers (readiness); never raises."""
        ...

    def upsert(self, kind: Kind, items: Iterable[Item]) -> int:
        """Insert or replace items by (tenant, id); one invalid item refuses them all. Returns how many."""
        ...

    def get(self, kind: Kind, id: str, tenant: str = DEFAULT_TENANT) -> Item | None: ...

    def delete(self, kind: Kind, id: str, tenant: str = DEFAULT_TENANT) -> bool:
        """Remove one item of ``tenant``; False when it did not exist."""
        ...

    def search(
        self,
        kind: Kind,
        vectors: Sequence[Sequence[float]],
        top_k: int = 10,
        filter: Filter | None = None,
        tenant: str = DEFAULT_TENANT,
    ) -> list[list[Hit]]:
        """The ``top_k`` nearest items of ``tenant`` matching ``filter`` for each query vector, by inner
        product, best first."""
        ...

    def count(self, kind: Kind) -> int:
        """Items of ``kind``, every tenant's (after every acknowledged write)."""
        ...

    def close(self) -> None: ...
