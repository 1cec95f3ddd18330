"""Client-facing errors in the OpenAI error shape.

Every error the sidecar answers with uses OpenAI's body
``{"error": {"message", "type", "param", "code"}}`` so that the official SDKs turn it
into their usual exception classes (``BadRequestError``, ``NotFoundError``, ...).
"""

from __future__ import annotations

from typing import TypedDict


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


def error_body(
    message: str, *, status: int, param: str | None = None, code: str | None = None
) -> ErrorBody:
    """Build the OpenAI error JSON for a status (``type`` derived from the status)."""
    return {
        "error": {
            "message": message,
            "type": error_type_for(status),
            "param": param,
            "code": code,
        }
    }


class BadRequest(Exception):
    """Invalid client input (HTTP 400); raised by request validation, never a 500.

    ``param`` names the offending body field (``messages[2].content``) or header
    (``X-Aegis-Quality``) so the message can be acted on without reading our code.
    """

    status: int = 400

    def __init__(
        self, message: str, *, param: str | None = None, code: str | None = "invalid_value"
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code

    def to_json(self) -> ErrorBody:
        return error_body(self.message, status=self.status, param=self.param, code=self.code)

    def __repr__(self) -> str:
        return f"BadRequest({self.message!r}, param={self.param!r}, code={self.code!r})"
