"""Request and token rate limits: ``rateLimits`` on a route and on a budget.

A limit of R per minute is exact across every sidecar of its scope: in any 60 s
window at most R requests (or R tokens, by the estimate reserved at admission) are
let through, whatever the number of sidecars (docs/ledger.md, "Rate limits").
"""

from __future__ import annotations

from enum import StrEnum
from typing import Self

from pydantic import ConfigDict, Field, model_validator

from .base import Model

MAX_REQUESTS_PER_MINUTE = 10_000_000
MAX_TOKENS_PER_MINUTE = 100_000_000_000


class RateUnit(StrEnum):
    """What a rate limit counts."""

    REQUESTS = "requests"
    TOKENS = "tokens"


class RateLimitSpec(Model):
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

    @model_validator(mode="after")
    def _one_at_least(self) -> Self:
        if self.requests_per_minute is None and self.tokens_per_minute is None:
            raise ValueError("rateLimits needs requestsPerMinute, tokensPerMinute or both")
        return self

    def limit(self, unit: RateUnit) -> int | None:
        """The limit of ``unit`` per minute, ``None`` when not limited."""
        if unit is RateUnit.REQUESTS:
            return self.requests_per_minute
        return self.tokens_per_minute
