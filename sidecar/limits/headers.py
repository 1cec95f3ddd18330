"""The rate-limit headers of an answer, in the formats the official clients read.

OpenAI endpoints: ``x-ratelimit-limit-requests``, ``x-ratelimit-remaining-requests``,
``x-ratelimit-reset-requests`` and the ``-tokens`` variants, the reset as a
duration (``1s``, ``6m0s``, ``8.64s``, ``120ms``). The Messages endpoint:
``anthropic-ratelimit-requests-limit`` / ``-remaining`` / ``-reset`` and the
``tokens`` variants, the reset as an RFC 3339 instant. A refusal adds
``Retry-After`` (whole seconds, rounded up) and ``retry-after-ms``.

For each unit the headers describe the limit with the least room of those the
request fell under.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta

from ..contract import RateUnit
from .limiter import PoolState

OPENAI_PREFIX = "x-ratelimit-"
ANTHROPIC_PREFIX = "anthropic-ratelimit-"


def duration(seconds: float) -> str:
    """OpenAI's reset format: ``6m0s``, ``1s``, ``8.64s``, ``120ms``, ``1h2m3s``."""
    if seconds <= 0:
        return "0s"
    if seconds < 1:
        return f"{max(math.ceil(seconds * 1000), 1)}ms"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{secs:.3f}".rstrip("0").rstrip(".")
    if hours >= 1:
        return f"{int(hours)}h{int(minutes)}m{text}s"
    if minutes >= 1:
        return f"{int(minutes)}m{text}s"
    return f"{text}s"


def tightest(states: Iterable[PoolState]) -> dict[RateUnit, PoolState]:
    """Per unit, the limit with the least room left."""
    chosen: dict[RateUnit, PoolState] = {}
    for state in states:
        best = chosen.get(state.key.unit)
        if best is None or (state.remaining, state.limit) < (best.remaining, best.limit):
            chosen[state.key.unit] = state
    return chosen


def rate_headers(states: Iterable[PoolState], now: datetime | None = None) -> dict[str, str]:
    """Both families; :func:`for_shape` keeps the one of the endpoint."""
    at = now or datetime.now(UTC)
    headers: dict[str, str] = {}
    for unit, state in tightest(states).items():
        name = unit.value
        headers[f"{OPENAI_PREFIX}limit-{name}"] = str(state.limit)
        headers[f"{OPENAI_PREFIX}remaining-{name}"] = str(max(state.remaining, 0))
        headers[f"{OPENAI_PREFIX}reset-{name}"] = duration(state.reset_seconds)
        reset = (at + timedelta(seconds=math.ceil(state.reset_seconds))).replace(microsecond=0)
        headers[f"{ANTHROPIC_PREFIX}{name}-limit"] = str(state.limit)
        headers[f"{ANTHROPIC_PREFIX}{name}-remaining"] = str(max(state.remaining, 0))
        headers[f"{ANTHROPIC_PREFIX}{name}-reset"] = reset.isoformat().replace("+00:00", "Z")
    return headers


def retry_headers(seconds: float) -> dict[str, str]:
    """``Retry-After`` (at least 1 s) and the exact ``retry-after-ms``."""
    return {
        "Retry-After": str(max(math.ceil(seconds), 1)),
        "retry-after-ms": str(max(math.ceil(seconds * 1000), 1)),
    }


def for_shape(headers: Mapping[str, str], anthropic: bool) -> dict[str, str]:
    """``headers`` without the other API's rate-limit family."""
    drop = OPENAI_PREFIX if anthropic else ANTHROPIC_PREFIX
    return {k: v for k, v in headers.items() if not k.lower().startswith(drop)}
