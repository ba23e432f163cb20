"""``StoreAdapter``: a ``SearchIndex`` (blocking: Milvus or the in-memory store) as async calls with a deadline.

What the API needs from a store, and nothing about HTTP:

- every call runs in the adapter's own threads (a Milvus call blocks) and is given up after
  ``deadline_s``: while Milvus is down or restarting the caller gets ``StoreUnavailable`` (503 +
  Retry-After) in seconds, and the thread finishes or fails on its own (a retried write is an idempotent
  upsert by id);
- concurrent searches of one kind, top_k, filter and tenant share one call (``SearchCoalescer``);
- each call is timed and counted for metrics (Milvus calls, not requests).

Timing a request's wait (the ``Server-Timing`` header) is the API's job: it times its own awaits.
Collections are prepared by the index itself on first use (``VectorStore`` keeps the one readiness flag),
so a Milvus that is down when the app starts only delays that.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol, TypeVar

from service.store.coalescing import SearchCoalescer
from service.store.errors import StoreUnavailable
from service.store.filters import Filter
from service.store.milvus import Hit, Item
from service.store.protocol import SearchIndex
from service.store.schema import Kind

T = TypeVar("T")


class StoreMetrics(Protocol):
    """What the adapter reports per store call (service.metrics.Metrics implements it)."""

    def store_call(self, op: str, seconds: float, *, failed: bool) -> None: ...


class StoreAdapter:
    def __init__(
        self,
        index: SearchIndex,
        metrics: StoreMetrics,
        *,
        search_max_batch: int = 64,
        deadline_s: float = 5.0,
        threads: int = 32,
    ) -> None:
        self.index = index
        self._metrics = metrics
        self._deadline_s = deadline_s
        # Threads of its own: calls stuck on a restarting Milvus must not take the ones decoding and other
        # to_thread work need.
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="tuwen-store")
        self._searches = SearchCoalescer(self._search_many, max_batch=search_max_batch)

    async def upsert(self, kind: Kind, items: Sequence[Item]) -> int:
        return await self._call("upsert", lambda index: index.upsert(kind, items))

    async def get(self, kind: Kind, item_id: str, tenant: str) -> Item | None:
        return await self._call("get", lambda index: index.get(kind, item_id, tenant))

    async def delete(self, kind: Kind, item_id: str, tenant: str) -> bool:
        return await self._call("delete", lambda index: index.delete(kind, item_id, tenant))

    async def search(
        self, kind: Kind, vector: Sequence[float], top_k: int, filter: Filter | None, tenant: str
    ) -> list[Hit]:
        """The tenant's nearest items to one query vector, possibly searched together with others."""
        return await self._searches.search(kind, vector, top_k, filter, tenant)

    async def _search_many(
        self, kind: Kind, vectors: list[Sequence[float]], top_k: int, filter: Filter | None, tenant: str
    ) -> list[list[Hit]]:
        return await self._call("search", lambda index: index.search(kind, vectors, top_k, filter, tenant))

    async def ready(self) -> bool:
        """The store answers and its collections are in place, within the deadline; never raises."""
        try:
            work = asyncio.get_running_loop().run_in_executor(self._executor, self.ping)
            return await asyncio.wait_for(work, self._deadline_s)
        except TimeoutError:
            return False

    def ping(self) -> bool:
        """Blocking readiness check (start-up); never raises."""
        try:
            self.index.ensure_collections()
        except Exception:
            return False
        return self.index.ping()

    def close(self) -> None:
        self.index.close()
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _call(self, op: str, fn: Callable[[SearchIndex], T]) -> T:
        work = asyncio.get_running_loop().run_in_executor(self._executor, self._timed, op, fn)
        try:
            return await asyncio.wait_for(work, self._deadline_s)
        except TimeoutError:
            self._metrics.store_call(op, self._deadline_s, failed=True)
            raise StoreUnavailable(
                f"Milvus did not answer within {self._deadline_s:g} s ({op}; TUWEN_MILVUS_TIMEOUT_S)"
            ) from None

    def _timed(self, op: str, fn: Callable[[SearchIndex], T]) -> T:
        started = time.perf_counter()
        failed = True
        try:
            result = fn(self.index)
            failed = False
            return result
        finally:
            self._metrics.store_call(op, time.perf_counter() - started, failed=failed)
