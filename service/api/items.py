"""``/items``: ingest (idempotent upsert by id), read and delete items; image thumbnails.

A write is answered only after Milvus accepted it. An image's thumbnail is written after that, so a
listed thumbnail never belongs to a write that failed.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response

from service.api.deps import RateLimitedTenantDep, ServicesDep, TenantDep
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
    validate_value,
)
from service.api.middleware import timing
from service.api.schemas import (
    DeleteResponse,
    ItemId,
    ItemResponse,
    Limits,
    MetadataIn,
    TextItemsRequest,
    UpsertResponse,
)
from service.api.search import thumbnail_url
from service.api.state import Services
from service.store import Item
from service.store.schema import ID_MAX_BYTES, Kind
from service.thumbnails import MEDIA_TYPE

router = APIRouter(tags=["items"])

_FORM_FIELDS = {
    "image": {"type": "string", "format": "binary"},
    "id": {"type": "string", "minLength": 1, "maxLength": ID_MAX_BYTES},
    "metadata": {"type": "string", "description": "a JSON object"},
}
_ID_DOC = "the item's id; any id, '/' included (percent-encode what a URL cannot carry)"
ItemIdPath = Annotated[ItemId, Path(description=_ID_DOC)]
ItemIdQuery = Annotated[ItemId, Query(description=_ID_DOC)]


def _check_metadata(limits: Limits, metadata: Any, where: str = "metadata") -> dict[str, Any]:
    if metadata is None:
        return {}
    return limits.metadata(validate_value(MetadataIn, metadata, where), where)


@router.post(
    "/items",
    response_model=UpsertResponse,
    openapi_extra=body_doc(TextItemsRequest, _FORM_FIELDS),
    summary="Ingest an image (multipart) or texts (JSON); replaces items with the same id",
)
async def upsert_items(
    request: Request, services: ServicesDep, tenant: RateLimitedTenantDep
) -> UpsertResponse:
    if require_media_type(request, JSON, MULTIPART) == JSON:
        return await _upsert_texts(services, tenant, await json_body(request, TextItemsRequest))
    form = await multipart(request, max_files=1)
    item_id = validate_value(ItemId, form_text(form, "id"), "id")
    metadata = _check_metadata(services.limits, form_json(form, "metadata"))
    files = form_files(form, "image")
    if not files:
        raise ApiError(422, "invalid_request", "send the image as the form file 'image'")
    embedded, decoded = await services.embedder.embed_images([await files[0].read()], tenant)
    record(embedded)
    thumbnail = await services.embedder.in_thread(services.thumbnails.render, decoded[0].image)
    item = Item(id=item_id, vector=embedded.vectors[0].tolist(), tenant=tenant, metadata=metadata)
    with timing("milvus-upsert"):
        await services.store.upsert("image", [item])
    await services.embedder.in_thread(services.thumbnails.put, tenant, item_id, thumbnail)
    return UpsertResponse(kind="image", ids=[item_id])


async def _upsert_texts(services: Services, tenant: str, body: TextItemsRequest) -> UpsertResponse:
    limits = services.limits
    if len(body.items) > limits.max_texts:
        raise ApiError(
            413,
            "too_many_texts",
            f"{len(body.items)} items in one request; at most {limits.max_texts} (TUWEN_MAX_TEXTS)",
        )
    for i, entry in enumerate(body.items):
        limits.text(entry.text, f"items[{i}].text")
        limits.metadata(entry.metadata, f"items[{i}].metadata")
    ids = [entry.id for entry in body.items]
    if len(set(ids)) != len(ids):
        raise ApiError(422, "duplicate_id", "each id may appear once per request")
    embedded = await services.embedder.embed_texts([entry.text for entry in body.items], tenant)
    record(embedded)
    items = [
        Item(id=entry.id, vector=vector.tolist(), tenant=tenant, metadata=entry.metadata, text=entry.text)
        for entry, vector in zip(body.items, embedded.vectors, strict=True)
    ]
    with timing("milvus-upsert"):
        await services.store.upsert("text", items)
    return UpsertResponse(kind="text", ids=ids)


# Ids may contain '/', so the path form takes the rest of the path (`{item_id:path}`); the query form
# (`?id=`) addresses every id, including those a URL path cannot carry unchanged (`.`/`..` segments, which
# clients normalise away). The legacy one-segment thumbnail route is declared first so that it keeps winning
# over the item route for `/items/image/<id>/thumbnail`.


@router.get(
    "/thumbnails",
    response_class=Response,
    responses={200: {"content": {MEDIA_TYPE: {}}}},
    summary="An ingested image's thumbnail (JPEG)",
)
async def thumbnail(
    item_id: Annotated[ItemId, Query(alias="id")], services: ServicesDep, tenant: TenantDep
) -> Response:
    data = await services.embedder.in_thread(services.thumbnails.get, tenant, item_id)
    if data is None:
        raise ApiError(404, "not_found", f"no thumbnail for image {item_id!r}")
    return Response(data, media_type=MEDIA_TYPE, headers={"Cache-Control": "private, max-age=60"})


@router.get(
    "/items/image/{item_id}/thumbnail",
    response_class=Response,
    responses={200: {"content": {MEDIA_TYPE: {}}}},
    summary="An image's thumbnail by a one-segment id (deprecated: use GET /thumbnails?id=)",
    deprecated=True,
)
async def legacy_thumbnail(item_id: ItemIdPath, services: ServicesDep, tenant: TenantDep) -> Response:
    return await thumbnail(item_id, services, tenant)


@router.get("/items/{kind}", response_model=ItemResponse, summary="Read one item (any id)")
async def get_item_by_query(
    kind: Kind, item_id: Annotated[ItemId, Query(alias="id")], services: ServicesDep, tenant: TenantDep
) -> ItemResponse:
    return await get_item(kind, item_id, services, tenant)


@router.delete("/items/{kind}", response_model=DeleteResponse, summary="Remove one item (any id)")
async def delete_item_by_query(
    kind: Kind, item_id: Annotated[ItemId, Query(alias="id")], services: ServicesDep, tenant: TenantDep
) -> DeleteResponse:
    return await delete_item(kind, item_id, services, tenant)


@router.get("/items/{kind}/{item_id:path}", response_model=ItemResponse, summary="Read one item")
async def get_item(kind: Kind, item_id: ItemIdPath, services: ServicesDep, tenant: TenantDep) -> ItemResponse:
    with timing("milvus-get"):
        item = await services.store.get(kind, item_id, tenant)
    if item is None:
        raise ApiError(404, "not_found", f"no {kind} item with id {item_id!r}")
    return ItemResponse(
        kind=kind,
        id=item.id,
        metadata=dict(item.metadata),
        text=item.text,
        thumbnail_url=thumbnail_url(item.id) if kind == "image" else None,
        created_at=item.created_at,
    )


@router.delete("/items/{kind}/{item_id:path}", response_model=DeleteResponse, summary="Remove one item")
async def delete_item(
    kind: Kind, item_id: ItemIdPath, services: ServicesDep, tenant: TenantDep
) -> DeleteResponse:
    with timing("milvus-delete"):
        deleted = await services.store.delete(kind, item_id, tenant)
    if not deleted:
        raise ApiError(404, "not_found", f"no {kind} item with id {item_id!r}")
    if kind == "image":
        await services.embedder.in_thread(services.thumbnails.delete, tenant, item_id)
    return DeleteResponse(kind=kind, id=item_id, deleted=True)
