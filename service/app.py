"""The FastAPI app: ``create_app(settings)``. Engines, batchers and the store are made in the lifespan
and kept on ``app.state.services``; nothing happens at import.

Run it with ``tuwen serve`` (one process: the embedded Milvus and the batchers live in it).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi
from fastapi.staticfiles import StaticFiles
from pydantic.json_schema import models_json_schema

from service.api import embed, health, items, openai, search, web
from service.api.errors import install_error_handlers
from service.api.middleware import RequestMiddleware
from service.api.schemas import EmbedTextsRequest, Limits, SearchRequest, TextItemsRequest
from service.api.state import Services
from service.config import Settings
from service.metrics import Metrics
from service.ratelimit import RateLimiter
from service.security import ApiKeys
from service.thumbnails import thumbnail_store

log = logging.getLogger("tuwen")

# Bodies read by the endpoints themselves (JSON or multipart) are documented from these models.
DOCUMENTED_MODELS = (EmbedTextsRequest, SearchRequest, TextItemsRequest)


def create_app(
    settings: Settings | None = None,
    *,
    build_services: Callable[[Settings, Metrics], Services] | None = None,
) -> FastAPI:
    """``build_services`` replaces the real engines and store (the fast tests pass fakes); it runs in a
    thread at start-up with the app's settings and metrics."""
    settings = settings or Settings()
    metrics = Metrics()
    build = build_services or _build_services

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = await asyncio.to_thread(build, settings, metrics)
        services.embedder.start()
        app.state.services = services
        try:
            # Connect (and start a local Milvus server) before serving; a Milvus that is down only makes
            # the service unready: /readyz and every store call retry it.
            store_ok = await asyncio.to_thread(services.store.ping)
            services.metrics.ready.set(1 if services.engines_warm and store_ok else 0)
            yield
        finally:
            app.state.services = None
            await services.embedder.stop()
            await asyncio.to_thread(services.store.close)

    app = FastAPI(
        title="Tuwen",
        summary="Chinese cross-modal (text ↔ image) search",
        version=_version(),
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.services = None
    install_error_handlers(app)
    for router in (embed.router, search.router, items.router, openai.router, health.router, web.router):
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=web.WEB_DIR), name="static")
    if settings.cors:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type"],
        )
    app.add_middleware(RequestMiddleware, max_body_bytes=settings.max_upload_bytes, metrics=metrics)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]  # FastAPI's documented override hook
    return app


def _build_services(settings: Settings, metrics: Metrics) -> Services:
    """Load and warm the engines and open the store (blocking: runs in a thread during start-up)."""
    from service.bundle import Bundle
    from service.embedder import BatchSettings, Embedder
    from service.engines import load_towers
    from service.store import VectorStore
    from service.store.adapter import StoreAdapter

    bundle = Bundle.load(settings.bundle)
    towers = load_towers(
        bundle,
        backend=settings.backend,
        precision=settings.precision,
        threads=settings.intra_op_threads,
        spin_wait=settings.ort_spin_wait,
        max_batch=max(settings.max_batch_text, settings.max_batch_image),
        engine_cache_dir=settings.engine_cache_dir,
    )
    towers.warmup()
    log.info(
        "model %s (%s, dim %d) on %s %s",
        bundle.model_name,
        bundle.family,
        bundle.embed_dim,
        towers.backend,
        towers.providers,
    )
    image_spec = bundle.image_spec()
    embedder = Embedder(
        towers,
        bundle.tokenizer(),
        image_spec,
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
        cpu_threads=settings.cpu_threads,
        # 2x the resize target keeps the final resize averaging; thumbnails need their own size
        decode_min_side=max(image_spec.decode_min_side, settings.thumbnail_size),
    )
    store = VectorStore(
        settings.resolved_milvus_uri,
        model=bundle.model_name,
        dim=bundle.embed_dim,
        token=settings.milvus_token.get_secret_value() if settings.milvus_token else "",
        index_type=settings.milvus_index_type,
        index_params=settings.milvus_index_params or None,
        search_params=settings.milvus_search_params or None,
        max_top_k=settings.max_top_k,
        timeout_s=settings.milvus_timeout_s,
    )
    return Services(
        settings=settings,
        metrics=metrics,
        api_keys=ApiKeys(settings.api_key_tenants()),
        limits=Limits(settings),
        model=bundle.model_name,
        family=bundle.family,
        dim=bundle.embed_dim,
        embedder=embedder,
        store=StoreAdapter(
            store,
            metrics,
            search_max_batch=settings.search_max_batch,
            deadline_s=settings.milvus_timeout_s,
        ),
        thumbnails=thumbnail_store(settings),
        backend=towers.backend,
        rate_limiter=RateLimiter(settings.rate_limit, settings.rate_burst, settings.tenant_rate_limits()),
        engines_warm=True,
    )


def _openapi(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
        _, defs = models_json_schema(
            [(m, "validation") for m in DOCUMENTED_MODELS], ref_template="#/components/schemas/{model}"
        )
        schema.setdefault("components", {}).setdefault("schemas", {}).update(defs.get("$defs", {}))
        app.openapi_schema = schema
    return app.openapi_schema


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tuwen")
    except PackageNotFoundError:
        return "0+unknown"
