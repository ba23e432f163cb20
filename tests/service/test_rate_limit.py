"""Per-tenant fairness: token-bucket rate limits (unit, on a fake clock) and both 429s over real HTTP."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from pydantic import ValidationError

from service.config import Settings
from service.ratelimit import RateLimiter, retry_after_seconds
from tests.service.api_server import client, serve, settings_for, tiny_bundle


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def granted(limiter: RateLimiter, tenant: str, times: int) -> int:
    """How many of ``times`` back-to-back requests pass."""
    return sum(limiter.acquire(tenant) == 0.0 for _ in range(times))


def test_a_fresh_bucket_allows_its_burst_then_says_how_long_to_wait() -> None:
    clock = FakeClock()
    limiter = RateLimiter(2.0, clock=clock)  # burst unset: two seconds' worth = 4
    assert granted(limiter, "alice", 4) == 4
    assert limiter.acquire("alice") == pytest.approx(0.5)  # one token at 2/s
    assert retry_after_seconds(limiter.acquire("alice")) == 1


def test_tokens_refill_at_the_rate_up_to_the_burst() -> None:
    clock = FakeClock()
    limiter = RateLimiter(2.0, burst=3, clock=clock)
    assert granted(limiter, "alice", 10) == 3
    clock.advance(0.5)  # one token back
    assert granted(limiter, "alice", 10) == 1
    clock.advance(3600)  # an idle hour refills to the burst, no further
    assert granted(limiter, "alice", 10) == 3


def test_a_refused_request_takes_nothing() -> None:
    clock = FakeClock()
    limiter = RateLimiter(0.1, burst=1, clock=clock)
    assert limiter.acquire("alice") == 0.0
    assert limiter.acquire("alice") == pytest.approx(10)
    clock.advance(4)
    assert limiter.acquire("alice") == pytest.approx(6)  # the retries in between cost nothing
    clock.advance(6)
    assert limiter.acquire("alice") == 0.0


def test_retry_after_is_whole_seconds_rounded_up_and_at_least_one() -> None:
    clock = FakeClock()
    limiter = RateLimiter(0.3, burst=1, clock=clock)
    limiter.acquire("alice")
    assert retry_after_seconds(limiter.acquire("alice")) == 4  # 1 / 0.3 = 3.33 s
    assert [retry_after_seconds(w) for w in (1e-9, 0.5, 1.0, 1.01)] == [1, 1, 1, 2]


def test_tenants_have_their_own_buckets() -> None:
    clock = FakeClock()
    limiter = RateLimiter(1.0, burst=2, clock=clock)
    assert granted(limiter, "alice", 5) == 2
    assert granted(limiter, "bob", 5) == 2  # alice's flood took nothing of bob's


def test_overrides_set_a_tenants_rate_and_zero_is_unlimited() -> None:
    clock = FakeClock()
    limiter = RateLimiter(1.0, overrides={"alice": 0.5, "bob": 0}, clock=clock)
    assert granted(limiter, "alice", 5) == 1  # default burst of 0.5/s: one request
    assert limiter.acquire("alice") == pytest.approx(2)
    assert granted(limiter, "bob", 1000) == 1000
    assert granted(limiter, "carol", 5) == 2  # the global rate
    assert limiter.enabled


def test_no_rate_means_no_limit_and_no_buckets() -> None:
    limiter = RateLimiter(0.0, clock=FakeClock())
    assert not limiter.enabled
    assert granted(limiter, "alice", 1000) == 1000 and len(limiter) == 0
    only_alice = RateLimiter(0.0, overrides={"alice": 1.0}, clock=FakeClock())
    assert granted(only_alice, "alice", 5) == 2 and granted(only_alice, "bob", 5) == 5


def test_buckets_are_bounded_dropping_the_least_recently_used() -> None:
    clock = FakeClock()
    limiter = RateLimiter(1.0, burst=1, max_tenants=3, clock=clock)
    for tenant in ("t0", "t1", "t2"):
        limiter.acquire(tenant)
    limiter.acquire("t0")  # t0 is now the most recent: t1 goes first
    for i in range(3, 100):
        limiter.acquire(f"t{i}")
    assert len(limiter) == 3
    assert limiter.acquire("t98") > 0  # a kept bucket still remembers its empty state


def test_bad_limiter_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match=">= 0"):
        RateLimiter(-1.0)
    with pytest.raises(ValueError, match="burst"):
        RateLimiter(1.0, burst=0)


# Settings: parsed and checked at start-up, naming the variable.


def test_rate_settings_are_parsed() -> None:
    settings = Settings(api_keys="ka:alice,kb:bob", rate_limit=2, rate_limits=" alice:0.5 , bob:0 ,")
    assert settings.tenant_rate_limits() == {"alice": 0.5, "bob": 0.0}
    assert Settings().tenant_rate_limits() == {} and Settings().rate_limit == 0  # off by default
    assert Settings(rate_limits="default:3").tenant_rate_limits() == {"default": 3.0}  # the open API's tenant
    with pytest.raises(ValidationError, match="no API key maps to"):
        Settings(rate_limits="alice:3")


@pytest.mark.parametrize(
    ("rate_limits", "complaint"),
    [
        ("alice", "tenant:rps"),
        ("alice:fast", "tenant:rps"),
        ("alice:-1", "tenant:rps"),
        ("alice:nan", "tenant:rps"),
        (":3", "tenant:rps"),
        ("alice:1,alice:2", "listed twice"),
        ("alcie:1", "no API key maps to"),
    ],
)
def test_bad_rate_limits_stop_the_start(rate_limits: str, complaint: str) -> None:
    with pytest.raises(ValidationError, match=f"TUWEN_RATE_LIMITS.*{complaint}"):
        Settings(api_keys="ka:alice,kb:bob", rate_limits=rate_limits)


def test_the_per_tenant_queue_must_fit_the_queue_and_the_largest_request() -> None:
    assert Settings().queue_per_tenant == 256  # half of the default MAX_QUEUE
    assert Settings(max_queue=64, max_texts=64).queue_per_tenant == 64  # room for one whole request
    assert Settings(max_queue_per_tenant=100).queue_per_tenant == 100
    with pytest.raises(ValidationError, match="TUWEN_MAX_QUEUE_PER_TENANT"):
        Settings(max_queue=128, max_queue_per_tenant=200)
    with pytest.raises(ValidationError, match="TUWEN_MAX_QUEUE_PER_TENANT"):
        Settings(max_texts=64, max_queue_per_tenant=32)


# Over real HTTP: a real uvicorn server, the tiny ONNX bundle, Milvus Lite.


def texts(n: int) -> dict[str, list[str]]:
    return {"texts": [f"第{i}句话" for i in range(n)]}


@pytest.mark.slow
def test_a_tenant_over_its_rate_gets_429_while_others_are_served(tmp_path: Path) -> None:
    # 0.001/s: no token comes back during the test, so what passes is exactly the burst.
    settings = settings_for(
        tiny_bundle(),
        tmp_path,
        api_keys="ka:alice,kb:bob,kc:carol",
        rate_limit=0.001,
        rate_burst=2,
        rate_limits="carol:0",
    )
    with (
        serve(settings) as url,
        client(url, "ka") as alice,
        client(url, "kb") as bob,
        client(url, "kc") as carol,
    ):
        assert alice.post("/embed", json=texts(1)).status_code == 200
        assert alice.post("/search", json={"text": "猫"}).status_code == 200
        refused = [
            alice.post("/embed", json=texts(1)),
            alice.post("/search", json={"text": "猫"}),
            alice.post("/v1/embeddings", json={"input": "猫"}),
            alice.post("/items", json={"items": [{"id": "t1", "text": "猫"}]}),
        ]
        for response in refused:
            assert response.status_code == 429, response.text
            assert response.json()["code"] == "rate_limited"
            assert 1 <= int(response.headers["Retry-After"]) <= 1000
        assert alice.get("/items/text/t1").json()["code"] == "not_found"  # reads are not rate limited
        # bob has his own bucket; carol's override (0) leaves her unlimited.
        assert [bob.post("/v1/embeddings", json={"input": "狗"}).status_code for _ in range(2)] == [200, 200]
        assert bob.post("/embed", json=texts(1)).status_code == 429
        assert {carol.post("/embed", json=texts(1)).status_code for _ in range(6)} == {200}


class Gate:
    """Holds the real text tower shut so that inputs provably wait in the queue."""

    def __init__(self) -> None:
        self.open = threading.Event()
        self.open.set()  # open for the start-up warm-up
        self.entered = threading.Event()


class GatedTextTower:
    def __init__(self, inner: object, gate: Gate) -> None:
        self._inner = inner
        self._gate = gate

    def embed(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        self._gate.entered.set()
        self._gate.open.wait(60)
        return self._inner.embed(input_ids, attention_mask)  # type: ignore[attr-defined]


@pytest.fixture
def text_gate(monkeypatch: pytest.MonkeyPatch) -> Iterator[Gate]:
    import service.engines

    gate = Gate()
    real_load = service.engines.load_towers

    def load_gated(*args, **kwargs):  # type: ignore[no-untyped-def]
        towers = real_load(*args, **kwargs)
        return dataclasses.replace(towers, text=GatedTextTower(towers.text, gate))

    monkeypatch.setattr(service.engines, "load_towers", load_gated)
    yield gate
    gate.open.set()  # never leave the server's engine thread blocked


def wait_for(condition: Callable[[], bool], what: str, limit_s: float = 60) -> None:
    deadline = time.monotonic() + limit_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up waiting for {what}")
        time.sleep(0.02)


def text_queue_depth(http: httpx.Client) -> float:
    for line in http.get("/metrics").text.splitlines():
        if line.startswith('tuwen_queue_depth{tower="text"}'):
            return float(line.split()[-1])
    return 0.0


@pytest.mark.slow
def test_a_tenant_over_its_queue_share_gets_429_overloaded_while_others_queue(
    tmp_path: Path, text_gate: Gate
) -> None:
    settings = settings_for(
        tiny_bundle(),
        tmp_path,
        api_keys="ka:alice,kb:bob",
        max_texts=8,
        max_images=8,
        max_batch_text=8,
        max_queue=32,
        max_queue_per_tenant=8,
    )
    with serve(settings) as url, client(url, "ka") as alice, client(url, "kb") as bob, client(url) as anon:
        pending: list[Future[httpx.Response]] = []
        with ThreadPoolExecutor(4) as pool:
            try:
                text_gate.open.clear()
                text_gate.entered.clear()
                pending.append(pool.submit(alice.post, "/embed", json=texts(8)))
                wait_for(text_gate.entered.is_set, "alice's first batch to reach the engine")
                pending.append(pool.submit(alice.post, "/embed", json=texts(8)))  # her whole share waits
                wait_for(lambda: text_queue_depth(anon) == 8, "alice's second request to queue")
                # Refused at once; were it queued instead, the closed gate would hold it past the timeout.
                refused = alice.post("/v1/embeddings", json={"input": "再来一句"}, timeout=30)
                assert refused.status_code == 429, refused.text
                assert refused.json()["code"] == "overloaded"
                assert int(refused.headers["Retry-After"]) >= 1
                pending.append(pool.submit(bob.post, "/embed", json=texts(1)))  # bob still gets in
                wait_for(lambda: text_queue_depth(anon) == 9, "bob's request to queue")
            finally:
                text_gate.open.set()
            assert [f.result(timeout=60).status_code for f in pending] == [200, 200, 200]
