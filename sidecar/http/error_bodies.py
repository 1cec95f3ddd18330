"""The one mapping of :class:`~aegis.sidecar.errors.AegisError` to wire error bodies.

Each endpoint answers errors in its own API's shape, so that the official SDKs
raise their usual exception classes:

* OpenAI (chat completions, embeddings, models, Responses):
  ``{"error": {"message", "type", "param", "code"}}``; once a chat stream has
  started, the same body as an SSE ``data:`` event; a Responses stream ends with a
  ``response.failed`` event carrying ``{"code", "message"}``.
* Anthropic (Messages): ``{"type": "error", "error": {"type", "message"},
  "request_id"}``; once a stream has started, an ``event: error`` with that body.
"""

from __future__ import annotations

from typing import Any, TypedDict

from aiohttp import web

from ..errors import AegisError, ClientError, RateLimited, RequestTooLarge
from ..frontends import Api, ErrorShape
from ..limits.headers import for_shape


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
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "insufficient_quota",
}
# Anthropic's error ``type`` by HTTP status (its API reference's table); any other
# 4xx is an invalid_request_error, any other 5xx an api_error.
_ANTHROPIC_TYPE_BY_STATUS: dict[int, str] = {
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    504: "timeout_error",
    529: "overloaded_error",
}
_REQUEST_ID = "X-Aegis-Request-Id"


def error_type_for(status: int) -> str:
    """The OpenAI error ``type`` that goes with an HTTP status."""
    if status in _TYPE_BY_STATUS:
        return _TYPE_BY_STATUS[status]
    return "server_error" if status >= 500 else "invalid_request_error"


def anthropic_type_for(status: int) -> str:
    """The Anthropic error ``type`` that goes with an HTTP status."""
    if status in _ANTHROPIC_TYPE_BY_STATUS:
        return _ANTHROPIC_TYPE_BY_STATUS[status]
    return "api_error" if status >= 500 else "invalid_request_error"


def error_body(error: AegisError) -> ErrorBody:
    """OpenAI's error JSON for ``error`` (``type`` derived from its status; a rate
    limit's is ``requests`` or ``tokens``, as OpenAI's own)."""
    kind = error.limit_type if isinstance(error, RateLimited) else error_type_for(error.status)
    return {
        "error": {
            "message": error.message,
            "type": kind,
            "param": error.param,
            "code": error.code,
        }
    }


def anthropic_error_body(error: AegisError) -> dict[str, Any]:
    """Anthropic's error JSON for ``error``; the request id is the ledger row's."""
    body: dict[str, Any] = {
        "type": "error",
        "error": {"type": anthropic_type_for(error.status), "message": error.message},
    }
    request_id = error.headers.get(_REQUEST_ID)
    if request_id:
        body["request_id"] = request_id
    return body


def error_response(error: AegisError, shape: ErrorShape = "openai") -> web.Response:
    """The JSON answer for ``error`` in ``shape``, with its status and headers (the
    rate-limit headers of the endpoint's API only)."""
    anthropic = shape == "anthropic"
    body = anthropic_error_body(error) if anthropic else error_body(error)
    return web.json_response(body, status=error.status, headers=for_shape(error.headers, anthropic))


def stream_error(error: AegisError, api: Api) -> dict[str, Any]:
    """The error object a started stream of ``api`` ends with (its translator frames
    it as that API's SSE event)."""
    if api is Api.RESPONSES:
        return response_error(error)
    if api.error_shape == "anthropic":
        return anthropic_error_body(error)
    return dict(error_body(error))


def response_error(error: AegisError) -> dict[str, Any]:
    """The ``error`` object of a failed Responses ``response`` (``code``, ``message``).

    The Responses API's codes name model-side failures; everything the sidecar ends a
    stream for is a ``server_error`` there, with the Aegis code in the message."""
    code = "server_error" if error.status >= 500 else error.code
    return {"code": code, "message": f"{error.message} ({error.code})"}


def from_http_exception(exc: web.HTTPException, max_body: int) -> AegisError:
    """An aiohttp HTTP error (4xx/5xx) in the family: a body over the limit, a
    malformed request line and the like."""
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return RequestTooLarge(f"request body exceeds the sidecar limit of {max_body} bytes")
    code = exc.reason.lower().replace(" ", "_")
    if exc.status < 500:
        return ClientError(exc.reason, status=exc.status, code=code)
    return AegisError(exc.reason, status=exc.status, code=code)
