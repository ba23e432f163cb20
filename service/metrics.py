"""Prometheus metrics of the service. Names are fixed (dashboards and alerts in deploy/ use them).

Each app gets its own registry, so several apps in one process (tests) never collide.
"""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
FAST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "tuwen_requests", "HTTP requests by route and status.", ["route", "status"], registry=r
        )
        self.request_seconds = Histogram(
            "tuwen_request_seconds",
            "HTTP request latency by route.",
            ["route"],
            buckets=FAST_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "tuwen_batch_size", "Inputs per inference batch.", ["tower"], buckets=BATCH_BUCKETS, registry=r
        )
        self.queue_seconds = Histogram(
            "tuwen_queue_seconds",
            "Time an input waited for its batch.",
            ["tower"],
            buckets=FAST_BUCKETS,
            registry=r,
        )
        self.inference_seconds = Histogram(
            "tuwen_inference_seconds", "Engine time per batch.", ["tower"], buckets=FAST_BUCKETS, registry=r
        )
        self.queue_depth_gauge = Gauge(
            "tuwen_queue_depth", "Inputs waiting per tower.", ["tower"], registry=r
        )
        self.queue_rejections = Counter(
            "tuwen_queue_rejections",
            "Requests refused with 429 because a tower's queue was full.",
            ["tower"],
            registry=r,
        )
        self.milvus_seconds = Histogram(
            "tuwen_milvus_seconds",
            "Milvus call latency by operation.",
            ["op"],
            buckets=FAST_BUCKETS,
            registry=r,
        )
        self.milvus_errors = Counter(
            "tuwen_milvus_errors", "Failed Milvus calls by operation.", ["op"], registry=r
        )
        self.ready = Gauge("tuwen_ready", "1 when engines are warm and Milvus answers, else 0.", registry=r)

    # The batcher's BatchMetrics protocol.
    def store_call(self, op: str, seconds: float, *, failed: bool) -> None:
        """One vector-store call (a deadline that ran out counts as a failed call)."""
        self.milvus_seconds.labels(op).observe(seconds)
        if failed:
            self.milvus_errors.labels(op).inc()

    def batch_formed(
        self, tower: str, size: int, queue_seconds: Sequence[float], inference_seconds: float
    ) -> None:
        self.batch_size.labels(tower).observe(size)
        for waited in queue_seconds:
            self.queue_seconds.labels(tower).observe(waited)
        self.inference_seconds.labels(tower).observe(inference_seconds)

    def queue_depth(self, tower: str, depth: int) -> None:
        self.queue_depth_gauge.labels(tower).set(depth)

    def queue_rejected(self, tower: str) -> None:
        self.queue_rejections.labels(tower).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
