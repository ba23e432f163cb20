"""Search coalescing: concurrent searches that ask the same question of Milvus share one call.

Milvus spends 2–3 ms CPU on a one-query search but 0.3–0.4 ms a query at ``nq=32``, so under load one
call with many query vectors beats many calls (docs/benchmarks.md, "Where the time goes", item 3).

Searches are grouped by key = (kind, top_k, tenant, filter): searches of different tenants or filters are
never sent together. The filter's key is its canonical JSON (validated filters are normalised to
``all_of``), so the expression is compiled once, by the store, not again here. Nothing waits for
company: the first search of a key starts its call on the event loop's next turn (searches made in the
same turn join it); searches of that key that arrive while the call is in flight queue and go together,
up to ``max_batch``, in the next one. Keys are independent (their calls may run at the same time), and a
key whose queue is empty is forgotten. A failed call fails its group only; a cancelled caller's query is
dropped (or its row discarded) without touching the others.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from service.store.filters import Filter
from service.store.milvus import Hit
from service.store.schema import Kind

# (kind, query vectors, top_k, filter, tenant) -> one hit list per vector; VectorStore.search's shape.
SearchFn = Callable[[Kind, list[Sequence[float]], int, Filter | None, str], Awaitable[list[list[Hit]]]]
_Key = tuple[Kind, int, str, str]


@dataclass
class _Query:
    vector: Sequence[float]
    filter: Filter | None
    tenant: str
    future: asyncio.Future[list[Hit]]


class SearchCoalescer:
    """Runs ``search`` once per group of concurrent same-key searches; each caller gets its own row."""

    def __init__(self, search: SearchFn, *, max_batch: int = 64) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self._search = search
        self._max_batch = max_batch
        # A key is present exactly while its drain task runs: that task owns the queue.
        self._queues: dict[_Key, deque[_Query]] = {}
        self._tasks: set[asyncio.Task[None]] = set()  # strong references, or running tasks may be collected

    @property
    def active_keys(self) -> int:
        """Keys with a call in flight or searches queued (idle keys are dropped)."""
        return len(self._queues)

    async def search(
        self, kind: Kind, vector: Sequence[float], top_k: int, filter: Filter | None, tenant: str
    ) -> list[Hit]:
        key = (kind, top_k, tenant, filter.model_dump_json() if filter is not None else "")
        query = _Query(vector, filter, tenant, asyncio.get_running_loop().create_future())
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = deque()
            task = asyncio.create_task(self._drain(key, queue))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        queue.append(query)
        try:
            return await query.future
        finally:
            query.future.cancel()  # no-op once answered; if this caller went away, its row is not sent

    async def _drain(self, key: _Key, queue: deque[_Query]) -> None:
        try:
            while queue:
                group: list[_Query] = []
                while queue and len(group) < self._max_batch:
                    query = queue.popleft()
                    if not query.future.done():  # skip callers that were cancelled while queued
                        group.append(query)
                if group:
                    await self._run(key[0], key[1], group)
        finally:
            # No await between the last `while queue` check and here: a search arriving later finds no
            # key and starts a new drain, so none is left waiting on a finished one.
            del self._queues[key]
            for query in queue:  # only when this task itself was cancelled (shutdown)
                query.future.cancel()

    async def _run(self, kind: Kind, top_k: int, group: list[_Query]) -> None:
        # Same key, so every query of the group has the same filter expression and tenant as the first.
        first = group[0]
        try:
            rows = await self._search(kind, [q.vector for q in group], top_k, first.filter, first.tenant)
            if len(rows) != len(group):
                raise RuntimeError(f"the search returned {len(rows)} hit lists for {len(group)} queries")
        except Exception as exc:  # every caller of the group gets the error; the next group goes on
            for query in group:
                if not query.future.done():
                    query.future.set_exception(exc)
            return
        except BaseException:
            for query in group:
                query.future.cancel()
            raise
        for query, row in zip(group, rows, strict=True):
            if not query.future.done():
                query.future.set_result(row)
