"""``/healthz`` (the process answers), ``/readyz`` (engines warm and Milvus reachable), ``/metrics``."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from service.api.schemas import Health, Readiness

router = APIRouter(tags=["operations"])


@router.get("/healthz", response_model=Health, summary="Liveness")
async def healthz() -> Health:
    return Health()


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}}, summary="Readiness")
async def readyz(request: Request) -> JSONResponse:
    services = getattr(request.app.state, "services", None)
    if services is None:
        body = Readiness(ready=False, engines=False, store=False, detail="starting")
        return JSONResponse(body.model_dump(), status_code=503)
    store_ok = await services.store.ready()
    ready = services.engines_warm and store_ok
    services.metrics.ready.set(1 if ready else 0)
    body = Readiness(
        ready=ready,
        engines=services.engines_warm,
        store=store_ok,
        model=services.model,
        family=services.family,
        backend=services.backend,
        detail=None if store_ok else "Milvus is unreachable",
    )
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)


@router.get("/metrics", response_class=Response, summary="Prometheus metrics")
async def metrics(request: Request) -> Response:
    registry = request.app.state.metrics
    return Response(registry.render(), media_type=registry.content_type)
