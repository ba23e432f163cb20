"""What the app keeps on ``app.state.services``: created in the lifespan, shared by every request."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from service.api.middleware import record_timing
from service.api.schemas import Limits
from service.config import Settings
from service.embedder import Embedder
from service.metrics import Metrics
from service.ratelimit import RateLimiter
from service.security import ApiKeys
from service.store.coalescing import SearchCoalescer
from service.store.errors import StoreUnavailable
from service.store.filters import Filter
from service.store.milvus import Hit
from service.store.protocol import SearchIndex
from service.store.schema import Kind
from service.thumbnails import ThumbnailStore

T = TypeVar("T")


class StoreHandle:
    """The vector store as the API uses it: blocking calls run in a thread, timed and counted for metrics.

    The store reconnects by itself (and restarts its local Milvus server) after `StoreUnavailable`, so the
    service recovers without a restart; collections are (re)checked lazily because Milvus may be down
    when the app starts. Concurrent searches with the same kind, top_k, filter and tenant share one Milvus
    call (`SearchCoalescer`, at most ``search_max_batch`` queries a call).
    """

    def __init__(
        self, store: SearchIndex, metrics: Metrics, *, search_max_batch: int = 64, deadline_s: float = 5.0
    ) -> None:
        self.store = store
        self._metrics = metrics
        self._prepared = False
        self._lock = threading.Lock()
        self._deadline_s = deadline_s
        # Store calls get their own threads: calls stuck on a restarting Milvus must not take the threads
        # that decoding, readiness checks and other to_thread work need.
        self._executor = ThreadPoolExecutor(max_workers=32, thread_name_prefix="tuwen-store")
        self.searches = SearchCoalescer(self._search_many, max_batch=search_max_batch)

    def _prepare(self) -> None:
        with self._lock:
            if not self._prepared:
                self.store.ensure_collections()
                self._prepared = True

    def call(self, op: str, fn: Callable[[SearchIndex], T]) -> T:
        started = time.perf_counter()
        try:
            self._prepare()
            return fn(self.store)
        except Exception:
            self._metrics.milvus_errors.labels(op).inc()
            raise
        finally:
            self._metrics.milvus_seconds.labels(op).observe(time.perf_counter() - started)

    async def _in_thread(self, op: str, fn: Callable[[SearchIndex], T]) -> T:
        """``call`` in a store thread, given up after the deadline: the caller answers 503 in seconds while
        the thread finishes (or fails) on its own; a retried write is an idempotent upsert by id."""
        work = asyncio.get_running_loop().run_in_executor(self._executor, self.call, op, fn)
        try:
            return await asyncio.wait_for(work, self._deadline_s)
        except TimeoutError:
            self._metrics.milvus_errors.labels(op).inc()
            raise StoreUnavailable(
                f"Milvus did not answer within {self._deadline_s:g} s ({op}; TUWEN_MILVUS_TIMEOUT_S)"
            ) from None

    async def run(self, op: str, fn: Callable[[SearchIndex], T]) -> T:
        started = time.perf_counter()
        try:
            return await self._in_thread(op, fn)
        finally:
            record_timing(f"milvus-{op}", time.perf_counter() - started)

    async def search(
        self, kind: Kind, vector: Sequence[float], top_k: int, filter: Filter | None, tenant: str
    ) -> list[Hit]:
        """The tenant's nearest items to one query vector, possibly searched together with others."""
        started = time.perf_counter()
        try:
            return await self.searches.search(kind, vector, top_k, filter, tenant)
        finally:
            # Per request: its time queued behind an in-flight call plus its own group's call.
            record_timing("milvus-search", time.perf_counter() - started)

    async def _search_many(
        self, kind: Kind, vectors: list[Sequence[float]], top_k: int, filter: Filter | None, tenant: str
    ) -> list[list[Hit]]:
        # One call per group: the metrics count Milvus calls, not requests.
        return await self._in_thread(
            "search", lambda store: store.search(kind, vectors, top_k, filter, tenant)
        )

    async def ready(self) -> bool:
        """``ping`` within the deadline: a readiness probe never hangs on a restarting Milvus."""
        try:
            return await asyncio.wait_for(
                asyncio.get_running_loop().run_in_executor(self._executor, self.ping), self._deadline_s
            )
        except TimeoutError:
            return False

    def ping(self) -> bool:
        """Milvus answers and the collections are in place (readiness); never raises."""
        try:
            self._prepare()
        except Exception:
            return False
        return bool(self.store.ping())

    def close(self) -> None:
        self.store.close()
        self._executor.shutdown(wait=False, cancel_futures=True)


@dataclass
class Services:
    settings: Settings
    metrics: Metrics
    api_keys: ApiKeys
    limits: Limits
    model: str
    dim: int
    embedder: Embedder
    store: StoreHandle
    thumbnails: ThumbnailStore
    backend: str
    rate_limiter: RateLimiter
    engines_warm: bool = False
