"""Request and response models of the HTTP API. The limits live here, so /docs shows them.

Limits that come from settings (texts per request, text length, top_k, metadata size) are checked by
`Limits`, built once from `Settings`; the static shapes are pydantic models.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic_core import PydanticCustomError

from service.api.errors import INVALID_ID, INVALID_METADATA, ApiError
from service.config import Settings
from service.store.filters import Filter
from service.store.schema import ID_MAX_BYTES, Kind, id_problem, metadata_problem


def _valid_id(value: str) -> str:
    if (problem := id_problem(value)) is not None:
        raise PydanticCustomError(INVALID_ID, problem)
    return value


def _valid_metadata(value: dict[str, Any]) -> dict[str, Any]:
    if (problem := metadata_problem(value)) is not None:
        raise PydanticCustomError(INVALID_METADATA, problem)
    return value


ItemId = Annotated[
    str,
    Field(
        min_length=1,
        max_length=ID_MAX_BYTES,
        description=f"Any text of 1–{ID_MAX_BYTES} bytes of UTF-8 without control characters; "
        "'/' and every other character are allowed.",
        examples=["2024/trip/cat.jpg"],
    ),
    AfterValidator(_valid_id),
]
Metadata = dict[str, Any]
# Metadata as a request sends it: JSON that Milvus can store (64-bit integers, finite numbers, bounded depth).
MetadataIn = Annotated[dict[str, Any], AfterValidator(_valid_metadata)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EmbedTextsRequest(_Strict):
    texts: Annotated[list[str], Field(min_length=1, examples=[["红色的圆形", "一只猫"]])]


class EmbedResponse(BaseModel):
    model: str
    family: str
    dim: int
    embeddings: list[list[float]]


class SearchRequest(_Strict):
    """A text query (JSON). Multipart requests carry the same fields as form fields, plus an ``image`` file."""

    text: str | None = Field(None, examples=["红色的圆形"])
    target: Kind = Field("image", description="Search the image collection or the text collection.")
    top_k: int = Field(10, ge=1, description="How many results (at most TUWEN_MAX_TOP_K).")
    filter: Filter | None = None
    text_weight: float = Field(
        0.5, ge=0, le=1, description="With both a text and an image: the text's share of the query vector."
    )


class SearchResult(BaseModel):
    id: str
    score: float
    metadata: Metadata
    text: str | None = Field(None, description="The item's text (target=text).")
    thumbnail_url: str | None = Field(None, description="Where the item's thumbnail is (target=image).")


class SearchResponse(BaseModel):
    model: str
    target: Kind
    results: list[SearchResult]


class TextItem(_Strict):
    id: ItemId
    text: str
    metadata: MetadataIn = Field(default_factory=dict)


class TextItemsRequest(_Strict):
    items: Annotated[list[TextItem], Field(min_length=1)]


class UpsertResponse(BaseModel):
    kind: Kind
    ids: list[str]


class ItemResponse(BaseModel):
    kind: Kind
    id: str
    metadata: Metadata
    text: str | None = None
    thumbnail_url: str | None = None
    created_at: int | None = Field(None, description="When the item was last written, epoch milliseconds.")


class DeleteResponse(BaseModel):
    kind: Kind
    id: str
    deleted: bool


class OpenAIEmbeddingsRequest(BaseModel):
    """OpenAI's ``POST /v1/embeddings`` body (text input). Unknown fields (``user``...) are ignored."""

    input: str | list[str]
    model: str | None = None
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1)


class OpenAIEmbedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class OpenAIUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class OpenAIEmbeddingsResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[OpenAIEmbedding]
    model: str
    usage: OpenAIUsage


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    ready: bool
    engines: bool
    store: bool
    model: str | None = None
    family: str | None = None
    backend: str | None = None
    detail: str | None = None


class Limits:
    """The per-request limits of the settings, checked with errors that name the limit to change."""

    def __init__(self, settings: Settings) -> None:
        self.max_texts = settings.max_texts
        self.max_images = settings.max_images
        self.max_text_chars = settings.max_text_chars
        self.max_top_k = settings.max_top_k
        self.max_metadata_bytes = settings.max_metadata_bytes

    def texts(self, texts: list[str]) -> list[str]:
        if not texts:
            raise ApiError(422, "invalid_request", "give at least one text")
        if len(texts) > self.max_texts:
            raise ApiError(
                413,
                "too_many_texts",
                f"{len(texts)} texts in one request; at most {self.max_texts} (TUWEN_MAX_TEXTS)",
            )
        for i, text in enumerate(texts):
            self.text(text, where=f"texts[{i}]")
        return texts

    def text(self, text: str, where: str = "text") -> str:
        if not text.strip():
            raise ApiError(422, "text_empty", f"{where} is empty")
        if len(text) > self.max_text_chars:
            raise ApiError(
                413,
                "text_too_long",
                f"{where} has {len(text)} characters; at most {self.max_text_chars} (TUWEN_MAX_TEXT_CHARS)",
            )
        return text

    def top_k(self, top_k: int) -> int:
        if not 1 <= top_k <= self.max_top_k:
            raise ApiError(422, "invalid_top_k", f"top_k must be between 1 and {self.max_top_k}, got {top_k}")
        return top_k

    def metadata(self, metadata: Metadata, where: str = "metadata") -> Metadata:
        size = len(json.dumps(metadata, ensure_ascii=False).encode())
        if size > self.max_metadata_bytes:
            raise ApiError(
                413,
                "metadata_too_large",
                f"{where} is {size} bytes of JSON; at most {self.max_metadata_bytes} (TUWEN_MAX_METADATA_BYTES)",
            )
        return metadata
