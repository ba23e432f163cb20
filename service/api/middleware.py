"""One pure-ASGI middleware for what every request shares: the body size limit (enforced while the body
streams in, not after it was read), request metrics by route template, and the ``Server-Timing`` header.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import time
from collections.abc import Iterator

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.errors import INTERNAL_ERROR
from service.metrics import Metrics

log = logging.getLogger("tuwen.api")

# Stage timings of the current request, filled by the endpoints ("queue", 0.0012), read at response start.
_timings: contextvars.ContextVar[list[tuple[str, float]] | None] = contextvars.ContextVar(
    "timings", default=None
)


def record_timing(name: str, seconds: float) -> None:
    timings = _timings.get()
    if timings is not None:
        timings.append((name, seconds))


@contextlib.contextmanager
def timing(name: str) -> Iterator[None]:
    """Record how long the block took (awaits included) as ``name`` in this request's Server-Timing."""
    started = time.perf_counter()
    try:
        yield
    finally:
        record_timing(name, time.perf_counter() - started)


def _server_timing(timings: list[tuple[str, float]]) -> bytes:
    return ", ".join(f"{name};dur={seconds * 1000:.2f}" for name, seconds in timings).encode()


def _json_response(status: int, code: str, message: str) -> tuple[Message, Message]:
    body = json.dumps({"code": code, "message": message}).encode()
    start = {
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
    }
    return start, {"type": "http.response.body", "body": body}


def _too_large(limit: int) -> tuple[Message, Message]:
    return _json_response(
        413, "body_too_large", f"the request body is over {limit} bytes (TUWEN_MAX_UPLOAD_BYTES)"
    )


class RequestMiddleware:
    def __init__(self, app: ASGIApp, *, max_body_bytes: int, metrics: Metrics) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        limit = self.max_body_bytes
        status = 500
        token = _timings.set([])

        async def reply(start: Message, body: Message) -> None:
            nonlocal status
            status = start["status"]
            await send(start)
            await send(body)

        try:
            declared = dict(scope["headers"]).get(b"content-length")
            if declared is not None and declared.isdigit() and int(declared) > limit:
                await reply(*_too_large(limit))  # refused before a byte of the body is read
                return

            received = 0
            over_limit = False

            async def counted_receive() -> Message:
                nonlocal received, over_limit
                message = await receive()
                if message["type"] == "http.request":
                    received += len(message.get("body", b""))
                    if received > limit:
                        over_limit = True
                        # Stop the reader here; whatever error the app makes of it, the client gets a 413.
                        raise _BodyTooLarge
                return message

            response_started = False

            async def guarded_send(message: Message) -> None:
                nonlocal status, response_started
                if message["type"] == "http.response.start":
                    if over_limit:
                        response_started = True
                        await reply(*_too_large(limit))
                        return
                    response_started = True
                    status = message["status"]
                    timings = _timings.get()
                    if timings:
                        message = dict(message)
                        message["headers"] = [
                            *message.get("headers", []),
                            (b"server-timing", _server_timing(timings)),
                        ]
                elif over_limit:
                    return  # the 413 went out instead of this response
                await send(message)

            try:
                await self.app(scope, counted_receive, guarded_send)
            except _BodyTooLarge:
                if not response_started:
                    await reply(*_too_large(limit))
            except Exception:
                # Answered here, not re-raised: the connection stays usable for the client's next request.
                log.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
                if not response_started:
                    await reply(*_json_response(*INTERNAL_ERROR))
        finally:
            _timings.reset(token)
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.requests.labels(template, str(status)).inc()
            self.metrics.request_seconds.labels(template).observe(time.perf_counter() - started)


class _BodyTooLarge(Exception):
    pass
