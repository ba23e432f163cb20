"""What the app keeps on ``app.state.services``: created in the lifespan, shared by every request."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from service.api.middleware import record_timing
from service.api.schemas import Limits
from service.config import Settings
from service.embedder import Embedder
from service.metrics import Metrics
from service.security import ApiKeys
from service.thumbnails import ThumbnailStore

T = TypeVar("T")


class StoreHandle:
    """The vector store as the API uses it: blocking calls run in a thread, timed and counted for metrics.

    The store reconnects by itself (and restarts its local Milvus server) after `StoreUnavailable`, so the
    service recovers without a restart; collections are (re)checked lazily because Milvus may be down
    when the app starts.
    """

    def __init__(self, store: Any, metrics: Metrics) -> None:
        self.store = store
        self._metrics = metrics
        self._prepared = False
        self._lock = threading.Lock()

    def _prepare(self) -> None:
        with self._lock:
            if not self._prepared:
                self.store.ensure_collections()
                self._prepared = True

    def call(self, op: str, fn: Callable[[Any], T]) -> T:
        started = time.perf_counter()
        try:
            self._prepare()
            return fn(self.store)
        except Exception:
            self._metrics.milvus_errors.labels(op).inc()
            raise
        finally:
            self._metrics.milvus_seconds.labels(op).observe(time.perf_counter() - started)

    async def run(self, op: str, fn: Callable[[Any], T]) -> T:
        started = time.perf_counter()
        try:
            return await asyncio.to_thread(self.call, op, fn)
        finally:
            record_timing(f"milvus-{op}", time.perf_counter() - started)

    def ping(self) -> bool:
        """Milvus answers and the collections are in place (readiness); never raises."""
        try:
            self._prepare()
        except Exception:
            return False
        return bool(self.store.ping())

    def close(self) -> None:
        self.store.close()


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
    engines_warm: bool = False
