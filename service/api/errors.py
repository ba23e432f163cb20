"""Every error leaves the API as JSON ``{"code", "message"}`` with a stable code.

Clients branch on ``code`` (documented in docs/api.md); ``message`` is for people. User input never
produces a 500: validation, image, filter, size and auth problems all map to a 4xx here.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.batching import QueueFull
from service.store.filters import FILTER_ERROR

log = logging.getLogger("tuwen.api")

RETRY_AFTER_SECONDS = 5
# Validation error types that are API error codes of their own; any other validation error is
# `invalid_request`. The filter's is defined with the filter (service.store.filters).
INVALID_ID = "invalid_id"
INVALID_METADATA = "invalid_metadata"
_OWN_CODES = (FILTER_ERROR, INVALID_ID, INVALID_METADATA)


class ApiError(Exception):
    """An error the API answers with ``status`` and ``{"code", "message"}``."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"code": code, "message": message}, status_code=status, headers=headers)


# Image errors of service.preprocessing.image → HTTP status.
IMAGE_ERROR_STATUS = {
    "image_empty": 400,
    "image_unreadable": 400,
    "image_too_large": 413,
    "image_too_many_pixels": 413,
    "image_format_unsupported": 415,
}

_HTTP_CODES = {
    400: "invalid_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
}


def _describe_validation(errors: list[Any]) -> str:
    parts = []
    for err in errors[:5]:
        where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body",)) or "request"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return "; ".join(parts) + more


def install_error_handlers(app: FastAPI) -> None:
    from service.preprocessing.image import ImageError
    from service.store import InvalidItem, StoreError, StoreUnavailable

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        code = next((e["type"] for e in errors if e.get("type") in _OWN_CODES), None)
        if code is None:  # e.g. an unknown filter op: pydantic's own error type, inside the filter
            code = (
                "invalid_filter" if any("filter" in e.get("loc", ()) for e in errors) else "invalid_request"
            )
        return error_response(422, code, _describe_validation(errors))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        return error_response(exc.status_code, code, message, getattr(exc, "headers", None))

    @app.exception_handler(ImageError)
    async def _image(_: Request, exc: ImageError) -> JSONResponse:
        return error_response(IMAGE_ERROR_STATUS.get(exc.code, 400), exc.code, str(exc.message))

    @app.exception_handler(QueueFull)
    async def _busy(_: Request, exc: QueueFull) -> JSONResponse:
        return error_response(429, "overloaded", str(exc), {"Retry-After": str(exc.retry_after)})

    @app.exception_handler(InvalidItem)
    async def _invalid_item(_: Request, exc: InvalidItem) -> JSONResponse:
        return error_response(422, exc.code, str(exc))

    @app.exception_handler(StoreError)
    async def _store_error(_: Request, exc: StoreError) -> JSONResponse:
        log.error("vector store error: %s", exc)
        return error_response(500, exc.code, str(exc))

    @app.exception_handler(StoreUnavailable)
    async def _store_down(_: Request, exc: StoreUnavailable) -> JSONResponse:
        log.warning("Milvus unavailable: %s", exc)
        return error_response(
            503,
            "store_unavailable",
            "the vector store (Milvus) is unavailable; retry shortly",
            {"Retry-After": str(RETRY_AFTER_SECONDS)},
        )

    # A genuine fault (an exception no handler above knows) is answered by RequestMiddleware, not by an
    # `Exception` handler here: Starlette re-raises after such a handler runs, and the server then drops the
    # client's keep-alive connection.


INTERNAL_ERROR = (500, "internal_error", "internal error; the server log has the details")
