"""Dynamic batching in isolation (a fake engine is fine here: the integration tests use real bundles)."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from service.batching import Batcher, QueueFull


class Recorder:
    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.rejected = 0
        self.depths: list[int] = []

    def batch_formed(self, tower, size, queue_seconds, inference_seconds) -> None:  # type: ignore[no-untyped-def]
        self.sizes.append(size)

    def queue_depth(self, tower, depth) -> None:  # type: ignore[no-untyped-def]
        self.depths.append(depth)

    def queue_rejected(self, tower) -> None:  # type: ignore[no-untyped-def]
        self.rejected += 1


def doubling_engine(calls: list[list[float]]):  # type: ignore[no-untyped-def]
    def run(batch: list[float]) -> np.ndarray:
        calls.append(list(batch))
        return np.array([[x, 2 * x] for x in batch], dtype=np.float32)

    return run


def run_async(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(asyncio.wait_for(coro, timeout=20))


def test_concurrent_requests_share_batches_and_each_gets_its_own_row() -> None:
    async def main() -> None:
        calls: list[list[float]] = []
        metrics = Recorder()
        batcher = Batcher(
            "text", doubling_engine(calls), max_batch=8, wait_ms=50, max_queue=100, metrics=metrics
        )
        batcher.start()
        results = await asyncio.gather(*(batcher.submit([float(i)]) for i in range(20)))
        await batcher.stop()
        for i, rows in enumerate(results):
            assert rows[0].vector.tolist() == [i, 2 * i]
        assert max(len(c) for c in calls) == 8  # capped at max_batch
        assert sum(len(c) for c in calls) == 20
        assert len(calls) < 20 and metrics.sizes == [len(c) for c in calls]

    run_async(main())


def test_a_lone_request_is_not_held_longer_than_the_wait() -> None:
    async def main() -> None:
        calls: list[list[float]] = []
        batcher = Batcher("text", doubling_engine(calls), max_batch=64, wait_ms=1, max_queue=10)
        batcher.start()
        rows = await batcher.submit([3.0, 4.0])  # one request with two inputs
        await batcher.stop()
        assert [r.vector.tolist() for r in rows] == [[3, 6], [4, 8]]
        assert rows[0].batch_size == 2

    run_async(main())


def test_an_idle_tower_runs_a_lone_request_without_spending_the_wait() -> None:
    async def main() -> None:
        calls: list[list[float]] = []
        # A one-hour wait: were it spent, run_async's 20 s limit would fail the test.
        batcher = Batcher("text", doubling_engine(calls), max_batch=64, wait_ms=3_600_000, max_queue=10)
        batcher.start()
        first = await batcher.submit([1.0])
        second = await batcher.submit([2.0])  # still idle: the last batch held one input
        await batcher.stop()
        assert [first[0].vector.tolist(), second[0].vector.tolist()] == [[1, 2], [2, 4]]
        assert calls == [[1.0], [2.0]]

    run_async(main())


def test_a_backend_error_reaches_every_request_of_its_batch_and_the_batcher_goes_on() -> None:
    async def main() -> None:
        fail = threading.Event()
        fail.set()

        def engine(batch: list[float]) -> np.ndarray:
            if fail.is_set():
                raise RuntimeError("engine exploded")
            return np.array([[x] for x in batch], dtype=np.float32)

        batcher = Batcher("image", engine, max_batch=8, wait_ms=30, max_queue=100)
        batcher.start()
        outcomes = await asyncio.gather(
            *(batcher.submit([float(i)]) for i in range(5)), return_exceptions=True
        )
        assert all(isinstance(o, RuntimeError) and "exploded" in str(o) for o in outcomes)
        fail.clear()
        rows = await batcher.submit([7.0])
        await batcher.stop()
        assert rows[0].vector.tolist() == [7.0]

    run_async(main())


def test_a_full_queue_refuses_at_once_and_counts_the_rejection() -> None:
    async def main() -> None:
        release = threading.Event()

        def slow(batch: list[float]) -> np.ndarray:
            release.wait(10)
            return np.zeros((len(batch), 1), dtype=np.float32)

        metrics = Recorder()
        batcher = Batcher("text", slow, max_batch=1, wait_ms=0, max_queue=3, metrics=metrics)
        batcher.start()
        first = asyncio.ensure_future(batcher.submit([0.0]))  # taken by the worker, blocks the engine
        await asyncio.sleep(0.05)
        queued = asyncio.ensure_future(batcher.submit([1.0, 2.0, 3.0]))  # fills the queue
        await asyncio.sleep(0.01)
        with pytest.raises(QueueFull) as refused:
            await batcher.submit([4.0])
        assert refused.value.retry_after >= 1 and metrics.rejected == 1
        release.set()
        assert len(await queued) == 3 and len(await first) == 1
        await batcher.stop()

    run_async(main())


def test_a_cancelled_request_does_not_break_the_others() -> None:
    async def main() -> None:
        calls: list[list[float]] = []
        batcher = Batcher("text", doubling_engine(calls), max_batch=8, wait_ms=50, max_queue=100)
        batcher.start()
        doomed = asyncio.ensure_future(batcher.submit([1.0]))
        kept = asyncio.ensure_future(batcher.submit([2.0]))
        await asyncio.sleep(0)
        doomed.cancel()
        rows = await kept
        await batcher.stop()
        assert rows[0].vector.tolist() == [2, 4]
        assert all(1.0 not in c for c in calls)

    run_async(main())


class GatedEngine:
    """Records each batch and holds it in the engine until the test opens the gate."""

    def __init__(self) -> None:
        self.calls: list[list[float]] = []
        self.entered = threading.Event()
        self.gate = threading.Event()

    def __call__(self, batch: list[float]) -> np.ndarray:
        self.calls.append(list(batch))
        self.entered.set()
        self.gate.wait(10)
        return np.array([[x] for x in batch], dtype=np.float32)


async def until(condition) -> None:  # type: ignore[no-untyped-def]
    """Yield to the loop until ``condition()`` holds (run_async's limit catches a hang)."""
    while not condition():
        await asyncio.sleep(0.001)


def test_a_flooding_tenant_delays_another_tenants_input_by_at_most_one_batch() -> None:
    async def main() -> None:
        engine = GatedEngine()
        batcher = Batcher("text", engine, max_batch=8, wait_ms=0, max_queue=512, max_queue_per_tenant=256)
        batcher.start()
        flood = [
            asyncio.ensure_future(batcher.submit([float(x) for x in range(k * 8, k * 8 + 8)], "a"))
            for k in range(25)
        ]
        await until(engine.entered.is_set)  # a's first batch holds the engine
        await until(lambda: batcher.depth == 200 - 8)  # the rest of a's 200 inputs wait
        lone = asyncio.ensure_future(batcher.submit([-1.0], "b"))
        await until(lambda: batcher.depth == 200 - 8 + 1)
        engine.gate.set()
        assert (await lone)[0].vector.tolist() == [-1.0]
        flooded = await asyncio.gather(*flood)
        await batcher.stop()
        with_b = [i for i, batch in enumerate(engine.calls) if -1.0 in batch]
        assert with_b == [1], f"b's input ran in batch {with_b} of {len(engine.calls)}"
        assert [row.vector[0] for rows in flooded for row in rows] == list(range(200))  # a's own order kept
        assert sum(len(batch) for batch in engine.calls) == 201

    run_async(main())


def test_a_tenant_over_its_share_is_refused_while_another_is_still_accepted() -> None:
    async def main() -> None:
        engine = GatedEngine()
        metrics = Recorder()
        batcher = Batcher(
            "text", engine, max_batch=1, wait_ms=0, max_queue=10, max_queue_per_tenant=4, metrics=metrics
        )
        batcher.start()
        first = asyncio.ensure_future(batcher.submit([0.0], "a"))  # taken by the worker, blocks the engine
        await until(engine.entered.is_set)
        queued = asyncio.ensure_future(batcher.submit([1.0, 2.0, 3.0, 4.0], "a"))  # a's whole share
        await until(lambda: batcher.depth == 4)
        with pytest.raises(QueueFull, match="too many of your inputs") as refused:
            await batcher.submit([5.0], "a")
        assert refused.value.retry_after >= 1 and metrics.rejected == 1
        other = asyncio.ensure_future(batcher.submit([6.0, 7.0, 8.0, 9.0], "b"))  # b has its own share
        await until(lambda: batcher.depth == 8)
        with pytest.raises(QueueFull, match="text queue full"):  # the global bound still holds
            await batcher.submit([10.0, 11.0, 12.0], "c")
        assert metrics.rejected == 2
        engine.gate.set()
        assert len(await first) == 1 and len(await queued) == 4 and len(await other) == 4
        await batcher.stop()
        # Round-robin after a's first input: a and b alternate.
        assert [batch[0] for batch in engine.calls] == [0.0, 1.0, 6.0, 2.0, 7.0, 3.0, 8.0, 4.0, 9.0]

    run_async(main())


def test_a_cancelled_request_frees_its_tenants_share_at_once() -> None:
    async def main() -> None:
        engine = GatedEngine()
        batcher = Batcher("text", engine, max_batch=1, wait_ms=0, max_queue=10, max_queue_per_tenant=3)
        batcher.start()
        first = asyncio.ensure_future(batcher.submit([0.0], "a"))
        await until(engine.entered.is_set)
        doomed = asyncio.ensure_future(batcher.submit([1.0, 2.0, 3.0], "a"))
        await until(lambda: batcher.depth == 3)
        doomed.cancel()
        await until(lambda: batcher.depth == 0)
        kept = asyncio.ensure_future(batcher.submit([4.0, 5.0, 6.0], "a"))  # would be refused were it held
        await until(lambda: batcher.depth == 3)
        engine.gate.set()
        assert [r.vector[0] for r in await kept] == [4.0, 5.0, 6.0] and len(await first) == 1
        await batcher.stop()
        assert all(x not in batch for batch in engine.calls for x in (1.0, 2.0, 3.0))

    run_async(main())
