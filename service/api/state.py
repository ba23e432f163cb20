"""What the app keeps on ``app.state.services``: created in the lifespan, shared by every request."""

from __future__ import annotations

from dataclasses import dataclass

from service.api.schemas import Limits
from service.config import Settings
from service.embedder import Embedder
from service.metrics import Metrics
from service.ratelimit import RateLimiter
from service.security import ApiKeys
from service.store.adapter import StoreAdapter
from service.thumbnails import ThumbnailStore


@dataclass
class Services:
    settings: Settings
    metrics: Metrics
    api_keys: ApiKeys
    limits: Limits
    model: str
    dim: int
    embedder: Embedder
    store: StoreAdapter
    thumbnails: ThumbnailStore
    backend: str
    rate_limiter: RateLimiter
    engines_warm: bool = False
    family: str = "chinese-clip"  # the bundle's model family (service.bundle.Family)
