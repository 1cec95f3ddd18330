"""The sidecar's one exception family: every answer that is not a completion.

Whoever decides that a request gets an error (request validation, the router, the
exchange, the HTTP layer) raises or returns one of these; the HTTP package turns
it into the endpoint's error body (OpenAI's, or Anthropic's on the Messages API),
as JSON or as an SSE error event (:mod:`aegis.sidecar.http.error_bodies`), so that
the official SDKs raise their usual exception classes. The hierarchy::

    AegisError                        status, code, message, param, headers
    ├── ClientError                   the request cannot be served as sent (4xx)
    │   ├── BadRequest                400 invalid_value, invalid_json, model_ambiguous
    │   ├── ModelNotFound             404 model_not_found
    │   ├── UnknownPath               404 unknown_url
    │   ├── RequestTooLarge           413 request_too_large
    │   └── ProviderRejected          the provider's own 4xx for this request
    ├── Refusal                       the sidecar's policy declines the request
    │   ├── BudgetExceeded            429 budget_exceeded
    │   ├── BudgetUnavailable         503 budget_unavailable
    │   ├── RateLimited               429 rate_limit_exceeded (type: requests or tokens)
    │   ├── PrivacyNoLocalProvider    503 privacy_no_local_provider
    │   └── NoProviderAvailable       503 no_provider_available
    ├── UpstreamFailure               no provider could answer
    │   ├── UpstreamBadGateway        502 upstream_error
    │   ├── UpstreamUnavailable       503 upstream_unavailable
    │   ├── UpstreamTimeout           504 upstream_timeout
    │   ├── UpstreamRateLimited       429 upstream_rate_limited
    │   └── UpstreamStreamInterrupted 502 upstream_stream_interrupted (SSE only)
    └── InternalError                 500 internal_error

Each class carries its status and code; an instance may override them where the
value comes from elsewhere (a provider's 4xx, an aiohttp HTTP exception).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import ClassVar, Self

__all__ = [
    "AegisError",
    "BadRequest",
    "BudgetExceeded",
    "BudgetUnavailable",
    "ClientError",
    "InternalError",
    "ModelNotFound",
    "NoProviderAvailable",
    "PrivacyNoLocalProvider",
    "ProviderRejected",
    "RateLimited",
    "Refusal",
    "RequestTooLarge",
    "UnknownPath",
    "UpstreamBadGateway",
    "UpstreamFailure",
    "UpstreamRateLimited",
    "UpstreamStreamInterrupted",
    "UpstreamTimeout",
    "UpstreamUnavailable",
]


class AegisError(Exception):
    """An error answer instead of a completion.

    ``param`` names the offending body field (``messages[2].content``) or header
    (``X-Aegis-Quality``) so the message can be acted on without reading our code;
    ``headers`` go on the HTTP answer (``X-Aegis-*``, ``Retry-After``).
    """

    default_status: ClassVar[int] = 500
    default_code: ClassVar[str] = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = self.default_status if status is None else status
        self.code = self.default_code if code is None else code
        self.param = param
        self.headers = dict(headers or {})

    def with_headers(self, headers: Mapping[str, str]) -> Self:
        """A copy that also carries ``headers`` (the original stays as it was, so a
        refusal held in a routing decision is never changed by raising it)."""
        clone = copy.copy(self)
        clone.headers = {**self.headers, **headers}
        return clone

    # A value, not an event: the router returns refusals inside its (comparable,
    # hashable) decisions, so two equal refusals must compare equal.
    def _key(self) -> tuple[object, ...]:
        return (type(self), self.status, self.code, self.message, self.param)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, AegisError):
            return NotImplemented
        return self._key() == other._key() and self.headers == other.headers

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.message!r}, status={self.status}, "
            f"code={self.code!r}, param={self.param!r})"
        )


class InternalError(AegisError):
    """Something the sidecar did not expect; details go to the log, not the client."""


# -- the request cannot be served as sent ---------------------------------------------


class ClientError(AegisError):
    default_status = 400
    default_code = "invalid_request"


class BadRequest(ClientError):
    """Invalid client input (HTTP 400); raised by request validation, never a 500."""

    default_code = "invalid_value"


class ModelNotFound(ClientError):
    default_status = 404
    default_code = "model_not_found"


class UnknownPath(ClientError):
    default_status = 404
    default_code = "unknown_url"


class RequestTooLarge(ClientError):
    default_status = 413
    default_code = "request_too_large"


class ProviderRejected(ClientError):
    """The provider answered the request itself with a 4xx (a client fault): passed
    on with the provider's status and code instead of falling back."""


# -- the sidecar's policy declines ------------------------------------------------------


class Refusal(AegisError):
    default_status = 503
    default_code = "refused"


class BudgetExceeded(Refusal):
    default_status = 429
    default_code = "budget_exceeded"


class BudgetUnavailable(Refusal):
    """The shared ledger is unreachable, so no money can be proven available."""

    default_status = 503
    default_code = "budget_unavailable"


class RateLimited(Refusal):
    """A request or token rate limit of the route or of a budget has no room now;
    ``limit_type`` (``requests`` or ``tokens``) is the OpenAI error ``type``."""

    default_status = 429
    default_code = "rate_limit_exceeded"
    limit_type: str = "requests"


class PrivacyNoLocalProvider(Refusal):
    default_status = 503
    default_code = "privacy_no_local_provider"


class NoProviderAvailable(Refusal):
    default_status = 503
    default_code = "no_provider_available"


# -- no provider could answer -------------------------------------------------------------


class UpstreamFailure(AegisError):
    default_status = 502
    default_code = "upstream_error"


class UpstreamBadGateway(UpstreamFailure):
    default_status = 502
    default_code = "upstream_error"


class UpstreamUnavailable(UpstreamFailure):
    default_status = 503
    default_code = "upstream_unavailable"


class UpstreamTimeout(UpstreamFailure):
    default_status = 504
    default_code = "upstream_timeout"


class UpstreamRateLimited(UpstreamFailure):
    default_status = 429
    default_code = "upstream_rate_limited"


class UpstreamStreamInterrupted(UpstreamFailure):
    """A streamed answer broke after its first byte: sent as an SSE error event."""

    default_status = 502
    default_code = "upstream_stream_interrupted"
