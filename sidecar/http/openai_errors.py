"""The one mapping of :class:`~aegis.sidecar.errors.AegisError` to OpenAI's error body.

Every error the sidecar answers with uses OpenAI's body
``{"error": {"message", "type", "param", "code"}}``, as JSON or, once a streamed
answer has started, as an SSE ``data:`` event, so that the official SDKs turn it
into their usual exception classes (``BadRequestError``, ``NotFoundError``, ...).
"""

from __future__ import annotations

import json
from typing import TypedDict

from aiohttp import web

from ..errors import AegisError, ClientError, RequestTooLarge


class ErrorDetail(TypedDict):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorBody(TypedDict):
    error: ErrorDetail


# OpenAI's ``type`` field by HTTP status; SDKs key off the status, humans off the type.
_TYPE_BY_STATUS: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "insufficient_quota",
    403: "permission_error",
    404: "invalid_request_error",
    409: "conflict_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "insufficient_quota",
}


def error_type_for(status: int) -> str:
    """The OpenAI error ``type`` that goes with an HTTP status."""
    if status in _TYPE_BY_STATUS:
        return _TYPE_BY_STATUS[status]
    return "server_error" if status >= 500 else "invalid_request_error"


def error_body(error: AegisError) -> ErrorBody:
    """OpenAI's error JSON for ``error`` (``type`` derived from its status)."""
    return {
        "error": {
            "message": error.message,
            "type": error_type_for(error.status),
            "param": error.param,
            "code": error.code,
        }
    }


def error_response(error: AegisError) -> web.Response:
    """The JSON answer for ``error``, with its status and headers."""
    return web.json_response(error_body(error), status=error.status, headers=error.headers)


def error_event(error: AegisError) -> bytes:
    """``error`` as an SSE event, for a stream whose status line is already sent."""
    return b"data: " + json.dumps(error_body(error)).encode() + b"\n\n"


def from_http_exception(exc: web.HTTPException, max_body: int) -> AegisError:
    """An aiohttp HTTP error (4xx/5xx) in the family: a body over the limit, a
    malformed request line and the like."""
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return RequestTooLarge(f"request body exceeds the sidecar limit of {max_body} bytes")
    code = exc.reason.lower().replace(" ", "_")
    if exc.status < 500:
        return ClientError(exc.reason, status=exc.status, code=code)
    return AegisError(exc.reason, status=exc.status, code=code)
