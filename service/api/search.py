"""``POST /search``: a text, an image, or both (weighted) → the nearest images or texts of the tenant."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import numpy as np
from fastapi import APIRouter, Request

from service.api.deps import RateLimitedTenantDep, ServicesDep
from service.api.embed import record
from service.api.errors import ApiError
from service.api.forms import (
    JSON,
    MULTIPART,
    body_doc,
    form_files,
    form_json,
    form_text,
    json_body,
    multipart,
    require_media_type,
    validate,
)
from service.api.middleware import timing
from service.api.schemas import SearchRequest, SearchResponse, SearchResult
from service.api.state import Services
from service.embedder import combine

router = APIRouter(tags=["search"])

_FORM_FIELDS = {
    "image": {"type": "string", "format": "binary", "description": "query image"},
    "text": {"type": "string"},
    "target": {"type": "string", "enum": ["image", "text"], "default": "image"},
    "top_k": {"type": "integer", "default": 10},
    "filter": {"type": "string", "description": "the filter object as JSON"},
    "text_weight": {"type": "number", "default": 0.5},
}
_BODY = body_doc(SearchRequest, _FORM_FIELDS)


def thumbnail_url(item_id: str) -> str:
    """The query form addresses every id ('/', '..', '%' included); a path could not (clients normalise it)."""
    return f"/thumbnails?id={quote(item_id, safe='')}"


@router.post("/search", response_model=SearchResponse, openapi_extra=_BODY, summary="Search images or texts")
async def search(request: Request, services: ServicesDep, tenant: RateLimitedTenantDep) -> SearchResponse:
    image: bytes | None = None
    if require_media_type(request, JSON, MULTIPART) == JSON:
        query = await json_body(request, SearchRequest)
    else:
        form = await multipart(request, max_files=1)
        fields: dict[str, Any] = {
            k: v for k in ("text", "target", "top_k", "text_weight") if (v := form_text(form, k)) is not None
        }
        if (flt := form_json(form, "filter")) is not None:
            fields["filter"] = flt
        query = validate(SearchRequest, fields)
        files = form_files(form, "image")
        if files:
            image = await files[0].read()
    services.limits.top_k(query.top_k)
    vector = await _query_vector(services, query, image, tenant)
    # The request's own wait: queued behind an in-flight call plus the call its group shared.
    with timing("milvus-search"):
        hits = await services.store.search(query.target, vector.tolist(), query.top_k, query.filter, tenant)
    return SearchResponse(
        model=services.model,
        target=query.target,
        results=[
            SearchResult(
                id=h.id,
                score=h.score,
                metadata=h.metadata,
                text=h.text if query.target == "text" else None,
                thumbnail_url=thumbnail_url(h.id) if query.target == "image" else None,
            )
            for h in hits
        ],
    )


async def _query_vector(
    services: Services, query: SearchRequest, image: bytes | None, tenant: str
) -> np.ndarray:
    if query.text is None and image is None:
        raise ApiError(422, "invalid_request", "give a query: a 'text', an 'image' file, or both")
    text_vec: np.ndarray | None = None
    image_vec: np.ndarray | None = None
    if query.text is not None:
        embedded = await services.embedder.embed_texts([services.limits.text(query.text)], tenant)
        record(embedded)
        text_vec = embedded.vectors[0]
    if image is not None:
        embedded, _ = await services.embedder.embed_images([image], tenant)
        record(embedded)
        image_vec = embedded.vectors[0]
    if text_vec is not None and image_vec is not None:
        return combine(text_vec, image_vec, query.text_weight)
    if text_vec is not None:
        return text_vec
    assert image_vec is not None  # the check above: a text, an image, or both
    return image_vec
