"""Request and token rate limits: ``rateLimits`` on a route and on a budget.

A limit of R per minute is exact across every sidecar of its scope: in any 60 s
window at most R requests (or R tokens, by the estimate reserved at admission) are
let through, whatever the number of sidecars (docs/ledger.md, "Rate limits").
"""

from __future__ import annotations

from pydantic import ConfigDict, Field

from ..behaviour import RateLimitSpecMethods
from ..vocabulary import MAX_REQUESTS_PER_MINUTE, MAX_TOKENS_PER_MINUTE
from .base import Model


class RateLimitSpec(RateLimitSpecMethods, Model):
    """Requests and tokens per minute, shared by every sidecar of the scope (a route:
    its sidecars; a budget: every sidecar spending it). Over a limit a request is
    answered 429 with Retry-After and the x-ratelimit-* headers."""

    # The API server's copy of the check below (an empty object is refused).
    model_config = ConfigDict(json_schema_extra={"minProperties": 1})

    requests_per_minute: int | None = Field(
        default=None,
        ge=1,
        le=MAX_REQUESTS_PER_MINUTE,
        description="Requests that may call a provider in any 60 s window (a fallback "
        "to another provider within one request counts once).",
    )
    tokens_per_minute: int | None = Field(
        default=None,
        ge=1,
        le=MAX_TOKENS_PER_MINUTE,
        description="Prompt + completion tokens in any 60 s window: the worst case is "
        "reserved at admission (prompt bound + max tokens), the unused part returns at "
        "settlement.",
    )
