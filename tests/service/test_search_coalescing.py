"""Search coalescing in isolation: a fake blocking store stands in for Milvus (the API tests use the real one).

The fake's first call blocks on an event, so the searches made meanwhile are known to arrive while a call
is in flight: what goes together is decided by the code, never by the clock.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Sequence
from typing import Any

import pytest

from service.metrics import Metrics
from service.store import Filter, Hit, compile_filter
from service.store.adapter import StoreAdapter
from service.store.coalescing import SearchCoalescer

RED = Filter.model_validate([{"field": "color", "op": "eq", "value": "red"}])


class FakeStore:
    """Answers each query vector [x] with one hit named after the tenant and x; the first call waits for
    ``release``. ``fail`` makes calls raise."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[float], int, Filter | None, str]] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        self.fail = False
        self.prepared = 0

    def ensure_collections(self) -> None:
        self.prepared += 1

    def search(
        self, kind: str, vectors: Sequence[Sequence[float]], top_k: int, filter: Filter | None, tenant: str
    ) -> list[list[Hit]]:
        self.calls.append((kind, [v[0] for v in vectors], top_k, filter, tenant))
        if len(self.calls) == 1:
            self.entered.set()
            assert self.release.wait(10), "the test never released the first call"
        if self.fail:
            raise RuntimeError("milvus exploded")
        return [[Hit(id=f"{tenant}:{v[0]:g}", score=v[0], metadata={})] for v in vectors]

    async def held(self) -> None:
        """Wait until the first call is in flight (blocked in its thread)."""
        assert await asyncio.to_thread(self.entered.wait, 10)


def coalescer(store: FakeStore, max_batch: int = 64) -> SearchCoalescer:
    async def search(*args: Any) -> list[list[Hit]]:
        return await asyncio.to_thread(store.search, *args)

    return SearchCoalescer(search, max_batch=max_batch)


def key(kind: str, top_k: int, flt: Filter | None, tenant: str) -> tuple[str, int, str]:
    return kind, top_k, compile_filter(flt, tenant)


def run_async(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(coro, timeout=20))


async def settle() -> None:
    """Let every task that can run reach its await (submits queue, nothing new is called)."""
    for _ in range(5):
        await asyncio.sleep(0)


def test_searches_made_during_a_call_go_together_in_the_next_call_each_with_its_own_row() -> None:
    async def main() -> None:
        store = FakeStore()
        searches = coalescer(store)
        first = asyncio.create_task(searches.search("text", [0.0], 5, None, "a"))
        await store.held()
        rest = [asyncio.create_task(searches.search("text", [float(i)], 5, None, "a")) for i in range(1, 6)]
        await settle()
        store.release.set()
        results = await asyncio.gather(first, *rest)
        assert [call[1] for call in store.calls] == [[0.0], [1.0, 2.0, 3.0, 4.0, 5.0]]
        assert [[h.id for h in hits] for hits in results] == [[f"a:{i}"] for i in range(6)]

    run_async(main())


def test_a_group_holds_at_most_max_batch_searches() -> None:
    async def main() -> None:
        store = FakeStore()
        searches = coalescer(store, max_batch=2)
        first = asyncio.create_task(searches.search("image", [0.0], 3, None, "a"))
        await store.held()
        rest = [asyncio.create_task(searches.search("image", [float(i)], 3, None, "a")) for i in range(1, 6)]
        await settle()
        store.release.set()
        results = await asyncio.gather(first, *rest)
        assert [call[1] for call in store.calls] == [[0.0], [1.0, 2.0], [3.0, 4.0], [5.0]]
        assert [hits[0].id for hits in results] == [f"a:{i}" for i in range(6)]

    run_async(main())


def test_tenants_filters_top_k_and_kinds_are_never_searched_together() -> None:
    async def main() -> None:
        store = FakeStore()
        searches = coalescer(store)
        held = asyncio.create_task(searches.search("text", [0.0], 5, None, "a"))
        await store.held()
        variants = [("text", 5, None, "a"), ("text", 5, None, "b"), ("text", 5, RED, "a")]
        variants += [("text", 5, RED, "b"), ("text", 6, None, "a"), ("image", 5, None, "a")]
        tasks = [
            asyncio.create_task(searches.search(kind, [float(i)], top_k, flt, tenant))
            for i in range(1, 25)
            for kind, top_k, flt, tenant in [variants[i % len(variants)]]
        ]
        # Other keys do not wait for the held call: their searches finish while it is still in flight.
        others = [t for i, t in enumerate(tasks, start=1) if i % len(variants)]
        done = await asyncio.gather(*others)
        assert not held.done() and all(len(hits) == 1 for hits in done)
        store.release.set()
        results = await asyncio.gather(held, *tasks)
        for i, hits in enumerate(results):
            tenant = variants[i % len(variants)][3]
            assert [h.id for h in hits] == [f"{tenant}:{i}"]  # own row, own tenant
        by_key: dict[tuple[Any, ...], list[float]] = {}
        for kind, xs, top_k, flt, tenant in store.calls:
            keys = {key(*variants[int(x) % len(variants)]) for x in xs}
            assert keys == {key(kind, top_k, flt, tenant)}, "searches of different keys in one call"
            by_key.setdefault(key(kind, top_k, flt, tenant), []).extend(xs)
        assert len(by_key) == len(variants)
        assert sum(len(xs) for xs in by_key.values()) == 25  # every search made exactly once
        assert len(store.calls) < 25  # the held key's queued searches went together
        assert searches.active_keys == 0

    run_async(main())


def test_an_error_reaches_every_caller_of_the_group_and_the_next_call_works() -> None:
    async def main() -> None:
        store = FakeStore()
        store.fail = True
        searches = coalescer(store)
        first = asyncio.create_task(searches.search("text", [0.0], 5, None, "a"))
        await store.held()
        group = [asyncio.create_task(searches.search("text", [float(i)], 5, None, "a")) for i in range(1, 4)]
        await settle()
        store.release.set()
        outcomes = await asyncio.gather(first, *group, return_exceptions=True)
        assert all(isinstance(o, RuntimeError) and "exploded" in str(o) for o in outcomes)
        assert [call[1] for call in store.calls] == [[0.0], [1.0, 2.0, 3.0]]
        store.fail = False
        hits = await searches.search("text", [9.0], 5, None, "a")
        assert [h.id for h in hits] == ["a:9"] and searches.active_keys == 0

    run_async(main())


def test_a_cancelled_caller_does_not_break_the_others() -> None:
    async def main() -> None:
        store = FakeStore()
        searches = coalescer(store)
        in_flight = asyncio.create_task(searches.search("text", [0.0], 5, None, "a"))
        await store.held()
        queued = [asyncio.create_task(searches.search("text", [float(i)], 5, None, "a")) for i in range(1, 4)]
        await settle()
        in_flight.cancel()  # its call runs on; its row is dropped
        queued[1].cancel()  # never sent
        await settle()
        store.release.set()
        kept = await asyncio.gather(queued[0], queued[2])
        assert [hits[0].id for hits in kept] == ["a:1", "a:3"]
        assert [call[1] for call in store.calls] == [[0.0], [1.0, 3.0]]
        for task in (in_flight, queued[1]):
            with pytest.raises(asyncio.CancelledError):
                await task
        assert searches.active_keys == 0

    run_async(main())


def test_idle_keys_are_dropped() -> None:
    async def main() -> None:
        store = FakeStore()
        store.release.set()
        searches = coalescer(store)
        tasks = [searches.search("text", [float(i)], 5, None, f"tenant-{i}") for i in range(50)]
        assert len(await asyncio.gather(*tasks)) == 50
        assert searches.active_keys == 0

    run_async(main())


def test_max_batch_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_batch"):
        coalescer(FakeStore(), max_batch=0)


def test_the_store_adapter_coalesces_and_counts_milvus_calls_not_requests() -> None:
    async def main() -> None:
        store = FakeStore()
        metrics = Metrics()
        adapter = StoreAdapter(store, metrics, search_max_batch=8)  # type: ignore[arg-type]  # a partial fake

        first = asyncio.create_task(adapter.search("text", [0.0], 5, RED, "a"))
        await store.held()
        rest = [asyncio.create_task(adapter.search("text", [float(i)], 5, RED, "a")) for i in range(1, 4)]
        await settle()
        store.release.set()
        results = await asyncio.gather(first, *rest)
        assert [hits[0].id for hits in results] == ["a:0", "a:1", "a:2", "a:3"]
        assert len(store.calls) == 2
        sample = metrics.registry.get_sample_value
        assert sample("tuwen_milvus_seconds_count", {"op": "search"}) == 2  # Milvus calls, not requests
        store.fail = True
        with pytest.raises(RuntimeError, match="exploded"):
            await adapter.search("text", [5.0], 5, RED, "a")
        assert sample("tuwen_milvus_errors_total", {"op": "search"}) == 1

    run_async(main())
