"""Per-tenant request rate limits: one token bucket per tenant.

A tenant's bucket holds up to ``burst`` tokens and refills at ``rate`` tokens a second; each request takes
one. An empty bucket refuses the request and says how long until the next token, which the API sends as
``Retry-After``. A refused request takes nothing, so a client that keeps retrying early digs no deeper.
Buckets are made on a tenant's first request and the least recently used are dropped past
``max_tenants`` (a dropped bucket comes back full, which is what an idle tenant's bucket would be by then).
Not thread-safe: the API calls it from the event loop only.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass


@dataclass
class TokenBucket:
    rate: float  # tokens per second, > 0
    burst: float  # capacity, >= 1
    tokens: float
    updated: float  # the clock's time of the last refill

    def take(self, now: float) -> float:
        """Take one token: 0.0 when one was there, else the seconds until one will be (nothing taken)."""
        self.tokens = min(self.burst, self.tokens + max(0.0, now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


def default_burst(rate: float) -> int:
    """Two seconds' worth of requests, and at least one (or nothing could ever pass)."""
    return max(1, math.ceil(2 * rate))


def retry_after_seconds(wait: float) -> int:
    """``Retry-After`` is whole seconds: round up so a client that obeys it finds a token."""
    return max(1, math.ceil(wait))


class RateLimiter:
    """``rate`` requests a second per tenant (0 = unlimited), ``overrides`` per tenant (0 = unlimited)."""

    def __init__(
        self,
        rate: float,
        burst: int | None = None,
        overrides: Mapping[str, float] | None = None,
        *,
        max_tenants: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate < 0 or any(r < 0 for r in (overrides or {}).values()):
            raise ValueError("rate limits must be >= 0 requests per second (0 = unlimited)")
        if burst is not None and burst < 1:
            raise ValueError(f"the burst must be at least 1 request, got {burst}")
        self._rate = rate
        self._burst = burst
        self._overrides = dict(overrides or {})
        self._max_tenants = max_tenants
        self._clock = clock
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self._rate > 0 or any(r > 0 for r in self._overrides.values())

    def acquire(self, tenant: str) -> float:
        """0.0 when ``tenant`` may make a request now (its token is taken), else seconds to wait."""
        rate = self._overrides.get(tenant, self._rate)
        if rate <= 0:
            return 0.0
        now = self._clock()
        bucket = self._buckets.get(tenant)
        if bucket is None:
            burst = self._burst if self._burst is not None else default_burst(rate)
            bucket = self._buckets[tenant] = TokenBucket(rate, burst, tokens=burst, updated=now)
            if len(self._buckets) > self._max_tenants:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(tenant)
        return bucket.take(now)

    def __len__(self) -> int:
        return len(self._buckets)
