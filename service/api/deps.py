"""Typed dependency aliases: what endpoints receive (``services: ServicesDep, tenant: TenantDep``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from service.api.errors import ApiError
from service.api.state import Services
from service.ratelimit import retry_after_seconds
from service.security import presented_key

# Both dependencies are `async def` although they never await: they only read app state and compare a key
# (microseconds), and FastAPI runs a plain `def` dependency on its thread pool, a hop per request that
# profiling put at ~18% of the app's GIL time under load (docs/benchmarks.md).


async def get_services(request: Request) -> Services:
    services: Services | None = getattr(request.app.state, "services", None)
    if services is None:
        raise ApiError(503, "not_ready", "the service is starting; retry shortly", {"Retry-After": "5"})
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


async def current_tenant(
    services: ServicesDep,
    authorization: Annotated[str | None, Header(description="Bearer <API key>")] = None,
    x_api_key: Annotated[str | None, Header(description="the API key (alternative to Authorization)")] = None,
) -> str:
    tenant = services.api_keys.tenant_for(presented_key(authorization, x_api_key))
    if tenant is None:
        raise ApiError(
            401,
            "unauthorized",
            "a valid API key is required: send `Authorization: Bearer <key>`",
            {"WWW-Authenticate": "Bearer"},
        )
    return tenant


TenantDep = Annotated[str, Depends(current_tenant)]


async def rate_limited_tenant(services: ServicesDep, tenant: TenantDep) -> str:
    """The tenant, once its request fits its rate (TUWEN_RATE_LIMIT / TUWEN_RATE_LIMITS); else 429."""
    wait = services.rate_limiter.acquire(tenant)
    if wait > 0:
        seconds = retry_after_seconds(wait)
        raise ApiError(
            429,
            "rate_limited",
            f"this tenant's requests are over its rate limit; retry in {seconds} s",
            {"Retry-After": str(seconds)},
        )
    return tenant


# For the endpoints that cost inference; reads and deletes are not rate limited.
RateLimitedTenantDep = Annotated[str, Depends(rate_limited_tenant)]
