"""Dynamic batching: requests that arrive within a few milliseconds share one inference call.

One `Batcher` per tower. Its single worker task owns the queue: it takes the first waiting input, waits
at most ``wait_ms`` for more (up to ``max_batch``), runs the batch in a thread (engines block), and hands
each input its own row through its own future. The wait is only spent under load (the last batch held
more than one input, or others already queue): a lone request after an idle spell runs at once, since
nobody is coming to share its batch — at concurrency 1 the wait was pure latency (``bench/service_load.py``
measured 5 of the 8 ms the service added to a search). Inputs that queue while a batch runs join the
next batch without any wait. A backend error is set on every future of the batch and
the worker carries on. The queue is bounded: past ``max_queue`` waiting inputs, `submit` raises
`QueueFull` at once, which the API answers with 429 and ``Retry-After``.

Fairness between tenants: each tenant's inputs wait in their own deque and a batch is filled round-robin,
one input per tenant in turn (the turn carries over to the next batch), so a tenant flooding the tower
delays another's input by about one batch instead of by its whole backlog. A tenant may hold at most
``max_queue_per_tenant`` waiting inputs, so it cannot fill the shared queue and lock the others out.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

import numpy as np

Payload = TypeVar("Payload")


class BatchMetrics(Protocol):
    """What a batcher reports (service.metrics implements it; tests may pass a recorder)."""

    def batch_formed(
        self, tower: str, size: int, queue_seconds: Sequence[float], inference_seconds: float
    ) -> None: ...

    def queue_depth(self, tower: str, depth: int) -> None: ...

    def queue_rejected(self, tower: str) -> None: ...


class QueueFull(Exception):
    """The tower's queue (or the caller's share of it) is full: retry after ``retry_after`` seconds."""

    def __init__(self, tower: str, retry_after: int = 1, *, own_share: bool = False) -> None:
        what = "too many of your inputs are waiting" if own_share else f"{tower} queue full"
        super().__init__(f"the {tower} tower is busy ({what}); retry in {retry_after} s")
        self.tower = tower
        self.retry_after = retry_after


@dataclass(frozen=True)
class Embedded:
    """One input's embedding and where its time went (for metrics and the Server-Timing header)."""

    vector: np.ndarray
    queue_seconds: float
    inference_seconds: float
    batch_size: int


@dataclass
class _Job(Generic[Payload]):
    payload: Payload
    future: asyncio.Future[Embedded]
    enqueued: float = field(default_factory=time.perf_counter)


class Batcher(Generic[Payload]):
    """Owns one tower's queue. ``run_batch`` maps a list of payloads to an [N, D] array (blocking)."""

    def __init__(
        self,
        tower: str,
        run_batch: Callable[[list[Payload]], np.ndarray],
        *,
        max_batch: int,
        wait_ms: float,
        max_queue: int,
        max_queue_per_tenant: int | None = None,
        metrics: BatchMetrics | None = None,
    ) -> None:
        """``max_queue_per_tenant``: most inputs one tenant may have waiting (default: ``max_queue``)."""
        self.tower = tower
        self._run_batch = run_batch
        self._max_batch = max_batch
        self._wait = wait_ms / 1000
        self._max_queue = max_queue
        self._max_queue_per_tenant = max_queue_per_tenant or max_queue
        self._metrics = metrics
        # Tenant → its waiting inputs, in round-robin order: the head tenant gives the next input.
        self._queues: OrderedDict[str, deque[_Job[Payload]]] = OrderedDict()
        self._waiting = 0
        self._arrived = asyncio.Event()  # set by submit; the worker clears it before it waits
        self._last_batch_size = 0
        self._worker: asyncio.Task[None] | None = None
        # One thread per tower: batches of one tower run one after another; the two towers in parallel.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"tuwen-{tower}")

    def start(self) -> None:
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._work(), name=f"batcher-{self.tower}")

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None
        while self._waiting:
            job = self._pop()
            if not job.future.done():
                job.future.set_exception(RuntimeError(f"the {self.tower} batcher stopped"))
        self._executor.shutdown(wait=True)

    @property
    def depth(self) -> int:
        return self._waiting

    async def submit(self, payloads: Sequence[Payload], tenant: str = "default") -> list[Embedded]:
        """Queue every payload (all or none) as ``tenant``'s, then wait for their rows."""
        if self._worker is None or self._worker.done():
            raise RuntimeError(f"the {self.tower} batcher is not running")
        own = self._queues.get(tenant)
        own_share = (len(own) if own else 0) + len(payloads) > self._max_queue_per_tenant
        if own_share or self._waiting + len(payloads) > self._max_queue:
            if self._metrics:
                self._metrics.queue_rejected(self.tower)
            raise QueueFull(self.tower, own_share=own_share)
        loop = asyncio.get_running_loop()
        jobs = [_Job(p, loop.create_future()) for p in payloads]
        if own is None:
            own = self._queues[tenant] = deque()  # a new tenant takes its turn after those waiting
        own.extend(jobs)
        self._waiting += len(jobs)
        self._arrived.set()
        self._report_depth()
        try:
            return list(await asyncio.gather(*(job.future for job in jobs)))
        except BaseException:
            for job in jobs:  # a cancelled or failed request leaves nothing for the worker to compute
                job.future.cancel()
            self._discard_done(tenant)  # and frees its share of the queue at once
            raise

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = await self._collect(loop)
            self._report_depth()
            jobs = [job for job in jobs if not job.future.done()]  # skip requests that went away
            self._last_batch_size = len(jobs)
            if not jobs:
                continue
            started = time.perf_counter()
            try:
                out = await loop.run_in_executor(self._executor, self._run_batch, [j.payload for j in jobs])
                if len(out) != len(jobs):
                    raise RuntimeError(
                        f"the {self.tower} engine returned {len(out)} rows for {len(jobs)} inputs"
                    )
            except Exception as exc:  # every request of the batch gets the error; the worker goes on
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(exc)
                continue
            inference = time.perf_counter() - started
            waits = [started - job.enqueued for job in jobs]
            for job, row, waited in zip(jobs, out, waits, strict=True):
                if not job.future.done():
                    job.future.set_result(Embedded(row, waited, inference, len(jobs)))
            if self._metrics:
                self._metrics.batch_formed(self.tower, len(jobs), waits, inference)

    async def _collect(self, loop: asyncio.AbstractEventLoop) -> list[_Job[Payload]]:
        await self._arrival(None)
        under_load = self._last_batch_size > 1 or self._waiting > 1
        deadline = loop.time() + (self._wait if under_load else 0.0)
        jobs: list[_Job[Payload]] = []
        while len(jobs) < self._max_batch:
            if self._waiting:
                jobs.append(self._pop())
                continue
            remaining = deadline - loop.time()
            if remaining <= 0 or not await self._arrival(remaining):
                break
        return jobs

    async def _arrival(self, timeout: float | None) -> bool:
        """Wait until an input is queued (True) or ``timeout`` seconds passed (False)."""
        self._arrived.clear()
        if self._waiting:
            return True
        try:
            await asyncio.wait_for(self._arrived.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def _pop(self) -> _Job[Payload]:
        """The head tenant's oldest input; that tenant then goes to the back of the turn."""
        tenant, own = next(iter(self._queues.items()))
        job = own.popleft()
        if own:
            self._queues.move_to_end(tenant)
        else:
            del self._queues[tenant]
        self._waiting -= 1
        return job

    def _discard_done(self, tenant: str) -> None:
        own = self._queues.get(tenant)
        if own is None:
            return
        live = deque(job for job in own if not job.future.done())
        self._waiting -= len(own) - len(live)
        if live:
            self._queues[tenant] = live  # keeps the tenant's place in the turn
        else:
            del self._queues[tenant]
        self._report_depth()

    def _report_depth(self) -> None:
        if self._metrics:
            self._metrics.queue_depth(self.tower, self._waiting)
