"""Error answers in each provider's own shape.

* OpenAI: ``{"error": {"message", "type", "param", "code"}}``; 429 carries
  ``retry-after``.
* DashScope compatible mode: the same ``error`` object (keys ``code``, ``param``,
  ``message``, ``type``) plus top-level ``id`` (``chatcmpl-<uuid>``) and
  ``request_id``, e.g. ``{"error": {"code": "invalid_parameter_error", "param":
  null, "message": "parameter.enable_thinking must be set to false for
  non-streaming calls", "type": "invalid_request_error"}, "id": "chatcmpl-…",
  "request_id": "…"}``.
* Ollama ``/v1``: ``openai.NewError``: ``type`` is ``invalid_request_error`` (400),
  ``not_found_error`` (404) or ``api_error``; ``param`` and ``code`` are null.
* Ollama native: ``{"error": "text"}``.
* Anthropic: ``{"type": "error", "error": {"type", "message"}, "request_id"}``, the
  ``type`` by status (``invalid_request_error`` 400, ``authentication_error`` 401,
  ``permission_error`` 403, ``not_found_error`` 404, ``rate_limit_error`` 429,
  ``api_error`` 500, ``overloaded_error`` 529).
"""

from __future__ import annotations

import json
import uuid
from typing import Any, Literal

from aiohttp import web

Flavour = Literal["openai", "dashscope", "ollama_v1", "ollama", "anthropic"]

# (message, type, code) of injected failures, per flavour and status.
_OPENAI_FAILURES: dict[int, tuple[str, str, str | None]] = {
    429: (
        "Rate limit reached for requests. Please try again later.",
        "requests",
        "rate_limit_exceeded",
    ),
    500: (
        "The server had an error while processing your request. Sorry about that!",
        "server_error",
        None,
    ),
    502: ("Bad gateway.", "server_error", None),
    503: ("The server is overloaded or not ready yet.", "server_error", None),
}
_DASHSCOPE_FAILURES: dict[int, tuple[str, str, str | None]] = {
    429: (
        "Requests rate limit exceeded, please try again later.",
        "limit_requests",
        "limit_requests",
    ),
    500: (
        "An internal error has occured, please try again later or contact service support.",
        "internal_error",
        "internal_error",
    ),
    502: ("Bad gateway.", "internal_error", "internal_error"),
    503: (
        "The service is temporarily unavailable, please try again later.",
        "ServiceUnavailable",
        "ServiceUnavailable",
    ),
}
_ANTHROPIC_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}
_ANTHROPIC_FAILURES: dict[int, str] = {
    429: "Number of request tokens has exceeded your per-minute rate limit",
    500: "Internal server error",
    529: "Overloaded",
}
_OLLAMA_FAILURES: dict[int, str] = {
    429: "too many requests",
    500: "an error was encountered while running the model",
    502: "bad gateway",
    503: "server busy, please try again.  maximum pending requests exceeded",
}


def provider_error(
    flavour: Flavour,
    status: int,
    message: str,
    *,
    type_: str | None = None,
    code: str | None = None,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    body: dict[str, Any]
    if flavour == "anthropic":
        kind = _ANTHROPIC_TYPES.get(
            status, "api_error" if status >= 500 else "invalid_request_error"
        )
        body = {
            "type": "error",
            "error": {"type": type_ or kind, "message": message},
            "request_id": f"req_fake{uuid.uuid4().hex[:20]}",
        }
    elif flavour == "ollama":
        body = {"error": message}
    elif flavour == "ollama_v1":
        kind = {400: "invalid_request_error", 404: "not_found_error"}.get(status, "api_error")
        body = {"error": {"message": message, "type": kind, "param": None, "code": None}}
    elif flavour == "dashscope":
        rid = str(uuid.uuid4())
        body = {
            "error": {
                "code": code,
                "param": param,
                "message": message,
                "type": type_ or "invalid_request_error",
            },
            "id": f"chatcmpl-{rid}",
            "request_id": rid,
        }
    else:
        body = {
            "error": {
                "message": message,
                "type": type_ or "invalid_request_error",
                "param": param,
                "code": code,
            }
        }
    return web.Response(
        status=status,
        body=json.dumps(body).encode(),
        content_type="application/json",
        headers=headers,
    )


def injected_failure(flavour: Flavour, status: int, retry_after: float | None) -> web.Response:
    """The answer of a failure injected by ``fail_next`` / ``error_rate``."""
    headers: dict[str, str] = {}
    if retry_after is None and status == 429:
        retry_after = 1.0
    if retry_after is not None:
        headers["retry-after"] = _format_seconds(retry_after)
    if flavour in ("ollama", "ollama_v1"):
        message = _OLLAMA_FAILURES.get(status, f"injected failure {status}")
        return provider_error(flavour, status, message, headers=headers)
    if flavour == "anthropic":
        message = _ANTHROPIC_FAILURES.get(status, f"injected failure {status}")
        return provider_error(flavour, status, message, headers=headers)
    table = _DASHSCOPE_FAILURES if flavour == "dashscope" else _OPENAI_FAILURES
    message, type_, code = table.get(status, (f"injected failure {status}", "server_error", None))
    return provider_error(flavour, status, message, type_=type_, code=code, headers=headers)


def unauthorized(flavour: Flavour, *, sent: bool) -> web.Response:
    if flavour == "anthropic":
        return provider_error(
            flavour, 401, "invalid x-api-key" if sent else "x-api-key header is required"
        )
    if flavour == "dashscope":
        return provider_error(flavour, 401, "Incorrect API key provided. ", code="invalid_api_key")
    if not sent:
        message = (
            "You didn't provide an API key. You need to provide your API key in an "
            "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
        )
        return provider_error(flavour, 401, message)
    return provider_error(flavour, 401, "Incorrect API key provided.", code="invalid_api_key")


def model_forbidden(flavour: Flavour, model: str) -> web.Response:
    if flavour == "anthropic":
        return provider_error(
            flavour, 403, f"Your API key does not have permission to use model: {model}"
        )
    if flavour == "dashscope":
        return provider_error(
            flavour, 403, "Access denied.", type_="AccessDenied", code="AccessDenied"
        )
    if flavour == "ollama":
        return provider_error(flavour, 403, f'access to model "{model}" is denied')
    return provider_error(
        flavour,
        403,
        f"You are not allowed to sample from model {model}.",
        code="model_not_allowed",
    )


def model_missing(flavour: Flavour, model: str) -> web.Response:
    if flavour == "anthropic":
        return provider_error(flavour, 404, f"model: {model}")
    if flavour in ("ollama", "ollama_v1"):
        return provider_error(flavour, 404, f'model "{model}" not found, try pulling it first')
    if flavour == "dashscope":
        return provider_error(
            flavour,
            404,
            "The model does not exist or you do not have access to it.",
            code="model_not_found",
        )
    return provider_error(
        flavour,
        404,
        f"The model `{model}` does not exist or you do not have access to it.",
        code="model_not_found",
    )


def _format_seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"
