"""OpenAI-compatible ``POST /v1/embeddings`` (text input), so existing OpenAI clients work unchanged.

The official Python client asks for ``encoding_format="base64"`` by default: little-endian float32
bytes, base64-encoded; both encodings are served.
"""

from __future__ import annotations

import base64

import numpy as np
from fastapi import APIRouter

from service.api.deps import RateLimitedTenantDep, ServicesDep
from service.api.embed import record
from service.api.errors import ApiError
from service.api.schemas import (
    OpenAIEmbedding,
    OpenAIEmbeddingsRequest,
    OpenAIEmbeddingsResponse,
    OpenAIUsage,
)

router = APIRouter(tags=["openai"])


@router.post(
    "/v1/embeddings", response_model=OpenAIEmbeddingsResponse, summary="OpenAI-compatible text embeddings"
)
async def embeddings(
    body: OpenAIEmbeddingsRequest, services: ServicesDep, tenant: RateLimitedTenantDep
) -> OpenAIEmbeddingsResponse:
    if body.model not in (None, "", services.model):
        raise ApiError(
            404, "model_not_found", f"this server serves model {services.model!r}, not {body.model!r}"
        )
    if body.dimensions not in (None, services.dim):
        raise ApiError(422, "invalid_request", f"dimensions must be {services.dim} for {services.model!r}")
    texts = services.limits.texts([body.input] if isinstance(body.input, str) else body.input)
    result = await services.embedder.embed_texts(texts, tenant)
    record(result)
    tokens = sum(await services.embedder.in_thread(services.embedder.count_tokens, texts))
    return OpenAIEmbeddingsResponse(
        data=[
            OpenAIEmbedding(index=i, embedding=_encode(row, body.encoding_format))
            for i, row in enumerate(result.vectors)
        ],
        model=services.model,
        usage=OpenAIUsage(prompt_tokens=tokens, total_tokens=tokens),
    )


def _encode(row: np.ndarray, encoding: str) -> list[float] | str:
    if encoding == "base64":
        return base64.b64encode(row.astype("<f4").tobytes()).decode()
    values: list[float] = row.tolist()
    return values
