"""Reading request bodies whose type decides their meaning (JSON or multipart), with the limits applied."""

from __future__ import annotations

import functools
import json
from typing import Any, TypeVar

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, TypeAdapter, ValidationError
from starlette.datastructures import FormData, UploadFile

from service.api.errors import ApiError

M = TypeVar("M", bound=BaseModel)

JSON = "application/json"
MULTIPART = "multipart/form-data"


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def require_media_type(request: Request, *allowed: str) -> str:
    kind = media_type(request)
    if kind not in allowed:
        raise ApiError(
            415,
            "unsupported_media_type",
            f"Content-Type {kind or '(none)'} is not accepted here; send {' or '.join(allowed)}",
        )
    return kind


async def json_body(request: Request, model: type[M]) -> M:
    body = await request.body()
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False)) from None


def validate_value(annotation: Any, value: Any, where: str) -> Any:
    """``value`` checked against a type (``ItemId``, ``MetadataIn``...), errors reported as for a JSON body."""
    try:
        return _adapter(annotation).validate_python(value)
    except ValidationError as exc:
        raise RequestValidationError(
            [{**e, "loc": ("body", where, *e["loc"])} for e in exc.errors(include_url=False)]
        ) from None


@functools.cache
def _adapter(annotation: Any) -> TypeAdapter[Any]:
    return TypeAdapter(annotation)


def validate(model: type[M], data: dict[str, Any]) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False)) from None


async def multipart(request: Request, *, max_files: int) -> FormData:
    return await request.form(max_files=max_files, max_fields=16)


def form_json(form: FormData, name: str) -> Any:
    """A form field that holds JSON (``metadata``, ``filter``); absent → None."""
    raw = form.get(name)
    if raw is None or raw == "":
        return None
    if not isinstance(raw, str):
        raise ApiError(422, "invalid_request", f"form field {name!r} must be a JSON string, not a file")
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ApiError(422, "invalid_request", f"form field {name!r} is not valid JSON: {exc.msg}") from None


def form_text(form: FormData, name: str) -> str | None:
    raw = form.get(name)
    if raw is None:
        return None
    if not isinstance(raw, str):
        raise ApiError(422, "invalid_request", f"form field {name!r} must be text, not a file")
    return raw


def form_files(form: FormData, name: str) -> list[UploadFile]:
    files = [v for v in form.getlist(name) if not isinstance(v, str)]
    if len(files) != len(form.getlist(name)):
        raise ApiError(422, "invalid_request", f"form field {name!r} must be a file upload")
    return files


def body_doc(json_model: type[BaseModel] | None, form_properties: dict[str, Any] | None) -> dict[str, Any]:
    """``openapi_extra`` for an endpoint that reads its own body: JSON (a model) and/or multipart fields.

    The models are added to the OpenAPI components by ``service.app`` (see ``DOCUMENTED_MODELS``).
    """
    content: dict[str, Any] = {}
    if json_model is not None:
        content[JSON] = {"schema": {"$ref": f"#/components/schemas/{json_model.__name__}"}}
    if form_properties is not None:
        content[MULTIPART] = {"schema": {"type": "object", "properties": form_properties}}
    return {"requestBody": {"required": True, "content": content}}
