"""``POST /embed``: JSON texts or multipart images → L2-normalised embeddings."""

from __future__ import annotations

from fastapi import APIRouter, Request

from service.api.deps import RateLimitedTenantDep, ServicesDep
from service.api.errors import ApiError
from service.api.forms import JSON, MULTIPART, body_doc, form_files, json_body, multipart, require_media_type
from service.api.middleware import record_timing
from service.api.schemas import EmbedResponse, EmbedTextsRequest
from service.embedder import Embeddings

router = APIRouter(tags=["embed"])

_BODY = body_doc(
    EmbedTextsRequest, {"images": {"type": "array", "items": {"type": "string", "format": "binary"}}}
)


def record(embeddings: Embeddings) -> None:
    record_timing("queue", embeddings.timing.queue_seconds)
    record_timing("inference", embeddings.timing.inference_seconds)


@router.post("/embed", response_model=EmbedResponse, openapi_extra=_BODY, summary="Embed texts or images")
async def embed(request: Request, services: ServicesDep, tenant: RateLimitedTenantDep) -> EmbedResponse:
    kind = require_media_type(request, JSON, MULTIPART)
    limits = services.limits
    if kind == JSON:
        body = await json_body(request, EmbedTextsRequest)
        result = await services.embedder.embed_texts(limits.texts(body.texts), tenant)
    else:
        form = await multipart(request, max_files=limits.max_images)
        uploads = form_files(form, "images")
        if not uploads:
            raise ApiError(422, "invalid_request", "send one or more image files in the form field 'images'")
        result, _ = await services.embedder.embed_images([await f.read() for f in uploads], tenant)
    record(result)
    return EmbedResponse(
        model=services.model, family=services.family, dim=services.dim, embeddings=result.vectors.tolist()
    )
