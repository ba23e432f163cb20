"""The app in-process on fakes: the deterministic fake towers and the in-memory store, with the real
tokenizer (the vocab that ships in service/preprocessing), image pipeline, batchers, limits, auth and
middleware. No torch, no ONNX export, no Milvus, no server: a fast test starts the app in milliseconds.

What only the real parts can show (embedding parity, Milvus itself, uvicorn) stays in the ``slow`` tests;
tests/service/test_store_contract.py keeps the in-memory store's semantics equal to Milvus's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from starlette.testclient import TestClient

from service.api.schemas import Limits
from service.api.state import Services
from service.app import create_app
from service.config import Settings
from service.embedder import BatchSettings, Embedder
from service.engines.fake import fake_towers
from service.metrics import Metrics
from service.preprocessing.image import ImageSpec
from service.preprocessing.text import ChineseTokenizer
from service.ratelimit import RateLimiter
from service.security import ApiKeys
from service.store.adapter import StoreAdapter
from service.store.memory import InMemoryStore
from service.thumbnails import ThumbnailStore

MODEL = "fake-clip"
DIM = 64
IMAGE_SIZE = 32


def fake_services(settings: Settings, metrics: Metrics) -> Services:
    """``Services`` as ``service.app`` builds them, with the fake towers and the in-memory store."""
    towers = fake_towers(DIM, IMAGE_SIZE)
    towers.warmup()
    embedder = Embedder(
        towers,
        ChineseTokenizer.from_vocab(),
        ImageSpec(size=IMAGE_SIZE),
        BatchSettings(
            settings.max_batch_text,
            settings.max_batch_image,
            settings.batch_wait_ms,
            settings.max_queue,
            settings.queue_per_tenant,
        ),
        max_image_bytes=settings.max_upload_bytes,
        max_image_pixels=settings.max_image_pixels,
        metrics=metrics,
        decode_min_side=max(ImageSpec(size=IMAGE_SIZE).decode_min_side, settings.thumbnail_size),
    )
    store = InMemoryStore(model=MODEL, dim=DIM, max_top_k=settings.max_top_k)
    return Services(
        settings=settings,
        metrics=metrics,
        api_keys=ApiKeys(settings.api_key_tenants()),
        limits=Limits(settings),
        model=MODEL,
        dim=DIM,
        embedder=embedder,
        store=StoreAdapter(
            store, metrics, search_max_batch=settings.search_max_batch, deadline_s=settings.milvus_timeout_s
        ),
        thumbnails=ThumbnailStore(settings.resolved_thumbnail_dir, settings.thumbnail_size),
        backend=towers.backend,
        rate_limiter=RateLimiter(settings.rate_limit, settings.rate_burst, settings.tenant_rate_limits()),
        engines_warm=True,
    )


def fake_settings(data_dir: Path, **overrides: object) -> Settings:
    base: dict[str, object] = {"data_dir": data_dir, "batch_wait_ms": 1}
    base.update(overrides)
    return Settings(**base)  # type: ignore[arg-type]


@contextlib.contextmanager
def fake_client(settings: Settings, key: str | None = None) -> Iterator[TestClient]:
    """The app on fakes, started (lifespan and all) and called in-process; ``key`` as a Bearer token."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    app = create_app(settings, build_services=fake_services)
    # raise_server_exceptions=False: an unexpected error must reach the client as the app's 500 JSON,
    # as over real HTTP, not as an exception in the test.
    with TestClient(app, headers=headers, raise_server_exceptions=False) as client:
        yield client
