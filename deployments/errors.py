"""One JSON error shape for every failure: ``{"error": {"code", "message", "field"}}``.

FastAPI's own shapes (``{"detail": ...}``) are replaced: validation errors become 422 naming
the first offending field as a dotted path inside the body (``events.0.ts``, ``k``), HTTP
exceptions keep their status, anything unexpected is a 500 that reveals nothing internal.
Bodies over the configured limit are refused with 413 before they are parsed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

logger = logging.getLogger("ray.serve")

_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    422: "validation_error",
    429: "rate_limited",
    503: "unavailable",
}


class ApiError(Exception):
    """An error the API reports to the client as-is. ``headers``: extra response headers
    (``{"Retry-After": "2"}`` on a 429/503); a 401 always gets ``WWW-Authenticate: Bearer``."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None,
                 headers: dict[str, str] | None = None):  # fmt: skip
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.headers = dict(headers or {})


def error_body(code: str, message: str, field: str | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "field": field}}


def error_response(status: int, code: str, message: str, field: str | None = None, headers=None):
    return JSONResponse(error_body(code, message, field), status_code=status, headers=headers)


def field_path(loc: tuple | list) -> str | None:
    """``("body", "events", 0, "ts")`` -> ``"events.0.ts"``; the request part is dropped."""
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:]
    return ".".join(parts) or None


def validation_error(errors: list[dict[str, Any]]) -> tuple[str | None, str]:
    """The field and message reported for a list of pydantic/FastAPI validation errors."""
    if not errors:
        return None, "invalid request"
    first = errors[0]
    field = field_path(first.get("loc", ()))
    kind = first.get("type", "")
    if kind == "extra_forbidden":
        message = "unknown field"
    elif kind == "missing":
        message = "required field is missing"
    elif kind == "json_invalid":
        message = "request body is not valid JSON"
        field = None
    else:
        message = str(first.get("msg", "invalid value"))
    return field, message


async def _api_error(request: Request, exc: ApiError):
    headers = dict(getattr(exc, "headers", None) or {})
    if exc.status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return error_response(exc.status, exc.code, exc.message, exc.field, headers or None)


async def _validation(request: Request, exc: RequestValidationError):
    field, message = validation_error(list(exc.errors()))
    return error_response(422, "validation_error", message, field)


async def _http(request: Request, exc: StarletteHTTPException):
    code = _STATUS_CODES.get(exc.status_code, "error")
    message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
    return error_response(exc.status_code, code, message)


async def _unexpected(request: Request, exc: Exception):
    logger.exception("unhandled error on %s", request.url.path)
    return error_response(500, "internal", "internal error; the request id is in the logs")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(Exception, _unexpected)


def _too_large(max_bytes: int) -> HTTPException:
    return HTTPException(413, f"request body is larger than {max_bytes} bytes")


class BodySizeLimit:
    """ASGI middleware: 413 for a body over ``max_bytes``, by ``Content-Length`` up front or
    by counting a chunked body as it is read (before any handler has answered)."""

    def __init__(self, app, max_bytes: int | Callable[[], int]):
        self.app = app
        self._limit = max_bytes

    @property
    def max_bytes(self) -> int:
        return self._limit() if callable(self._limit) else self._limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    too_big = int(value) > self.max_bytes
                except ValueError:
                    too_big = False
                if too_big:
                    return await self._refuse(scope, receive, send)
        seen = 0

        async def counting_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    # FastAPI re-raises HTTPExceptions from body reading; _http answers 413.
                    raise _too_large(self.max_bytes)
            return message

        await self.app(scope, counting_receive, send)

    async def _refuse(self, scope, receive, send):
        response = error_response(
            413, "payload_too_large", f"request body is larger than {self.max_bytes} bytes"
        )
        await response(scope, receive, send)
