"""Request and response models of the HTTP API. The limits live here, so /docs shows them.

Limits that come from settings (texts per request, text length, top_k, metadata size) are checked by
`Limits`, built once from `Settings`; the static shapes are pydantic models.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from service.api.errors import ApiError
from service.config import Settings
from service.store.filters import Filter

Kind = Literal["image", "text"]
ItemId = Annotated[str, StringConstraints(min_length=1, max_length=256, pattern=r"^[^\x00-\x1f\x7f]+$")]
Metadata = dict[str, Any]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EmbedTextsRequest(_Strict):
    texts: Annotated[list[str], Field(min_length=1, examples=[["红色的圆形", "一只猫"]])]


class EmbedResponse(BaseModel):
    model: str
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
    metadata: Metadata = Field(default_factory=dict)


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
