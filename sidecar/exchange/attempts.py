"""The candidate loop: reserve, call, and on a retriable failure fall back.

Candidates come from the router in order. Each is reserved and called in turn;
a failure that another provider could answer (timeouts, 5xx, 429, open circuits)
releases the reservation and moves on, a client fault (a 400-class answer) goes
back to the client at once, and when every candidate failed the answer names what
happened to each.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import NoReturn, TypeVar

from ..adapters import ErrorKind, UpstreamCall, UpstreamError
from ..budgets import Reservation
from ..errors import (
    AegisError,
    NoProviderAvailable,
    ProviderRejected,
    UpstreamBadGateway,
    UpstreamRateLimited,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from ..ledger import Status
from ..routing import Candidate
from .charges import CandidateSkipped, release, reserve
from .masks import body_for
from .rates import admit_call, admit_route, called
from .record import Exchange

T = TypeVar("T")


def upstream_call(exchange: Exchange, candidate: Candidate) -> UpstreamCall:
    """The request as ``candidate``'s adapter receives it (masked for a cloud
    provider when privacy masks what was detected), within the request's deadline."""
    call = UpstreamCall(
        body=body_for(exchange, candidate),
        models=candidate.models,
        max_tokens=candidate.max_tokens_to_send,
        vision=exchange.facts.has_images,
        deadline=deadline(exchange),
    )
    if exchange.trace is not None:  # the attempt's traceparent goes to the provider
        call.headers = exchange.trace.upstream_headers()
    return call


def deadline(exchange: Exchange) -> float:
    """The request's deadline on ``time.monotonic()``'s clock (``requestTimeoutSeconds``
    from when it came in)."""
    limit = exchange.snapshot.config.listen.limits.request_timeout_seconds
    return time.monotonic() + limit - (time.perf_counter() - exchange.started)


def _past_deadline(exchange: Exchange, candidate: Candidate) -> UpstreamError | None:
    if deadline(exchange) > time.monotonic():
        return None
    return UpstreamError(
        ErrorKind.TIMEOUT,
        "the request's deadline passed",
        provider=candidate.provider.name,
        model=candidate.models[0],
    )


def failure_reason(error: UpstreamError) -> str:
    """Why a provider failed, as fallback headers, ledger rows and metrics say it."""
    if error.kind is ErrorKind.STATUS and error.status is not None:
        return f"status_{error.status}"
    return error.kind.value


def usable(exchange: Exchange, candidate: Candidate) -> bool:
    """After a FallbackLocal budget refusal only local providers remain."""
    return not exchange.local_only_after_budget or candidate.provider.is_local


def exhausted(exchange: Exchange, last: UpstreamError | None) -> AegisError:
    """Every candidate failed or was skipped: 503/504/502/429 naming what happened."""
    message = f"no provider could answer ({', '.join(exchange.fallbacks) or 'no candidate'})"
    headers = exchange.headers(None, None)
    failure: AegisError
    if last is None:
        failure = NoProviderAvailable(message, headers=headers)
    elif last.kind is ErrorKind.TIMEOUT:
        failure = UpstreamTimeout(message, headers=headers)
    elif last.kind in (ErrorKind.CONNECT, ErrorKind.CIRCUIT_OPEN) or last.status == 503:
        failure = UpstreamUnavailable(message, headers=headers)
    elif last.status == 429:
        if last.retry_after is not None:
            headers["Retry-After"] = str(max(1, round(last.retry_after)))
        failure = UpstreamRateLimited(message, headers=headers)
    else:
        failure = UpstreamBadGateway(message, headers=headers)
    exchange.runtime.metrics.refusals.labels(failure.code).inc()
    return failure


def refuse(exchange: Exchange, answer: AegisError) -> NoReturn:
    """A budget (or its rate limit) refused the request before any call: its row
    (refused) and the answer with the request's headers, as a refusal by the router."""
    exchange.runtime.metrics.refusals.labels(answer.code).inc()
    exchange.record(
        candidate=None, model="", status=Status.REFUSED, http_status=answer.status, refusal=answer
    )
    raise answer.with_headers(exchange.headers(None, None))


async def first_answer(
    exchange: Exchange,
    attempt: Callable[[Candidate, Reservation | None], Awaitable[T]],
) -> tuple[Candidate, Reservation | None, T]:
    """Try the candidates in order: reserve, ``attempt`` the call, and on a retriable
    failure release and move on. A client-fault answer (400-class) goes back to the
    client; when every candidate fails, raise the 502/503/504
    :class:`~aegis.sidecar.errors.UpstreamFailure`. On success the reservation is
    still open: the caller settles."""
    await admit_route(exchange)  # the route's rate limits: once per request
    last: UpstreamError | None = None
    held: AegisError | None = None  # a FallbackLocal budget's answer, if nothing else serves
    for candidate in exchange.decision.candidates:
        if not usable(exchange, candidate):
            continue
        expired = _past_deadline(exchange, candidate)
        if expired is not None:
            last = expired
            exchange.failed(candidate, "deadline")
            continue
        try:
            reservation = await reserve(exchange, candidate)
        except CandidateSkipped as skip:
            exchange.failed(candidate, str(skip))
            held = held or skip.refusal
            continue
        except AegisError as answer:  # a Reject budget's answer, recorded as the router's
            refuse(exchange, answer)
        limited = await admit_call(exchange, candidate)  # its budgets' rate limits
        if limited is not None:
            release(exchange, reservation)
            exchange.failed(candidate, "rate_limited")
            held = held or limited
            continue
        exchange.attempts += 1
        called(exchange)
        if exchange.trace is not None:
            exchange.trace.begin_attempt(candidate, exchange.attempts)
        try:
            return candidate, reservation, await attempt(candidate, reservation)
        except UpstreamError as error:
            release(exchange, reservation)
            if error.client_fault:
                exchange.record(
                    candidate=candidate,
                    model=error.model or "",
                    status=Status.ERROR,
                    http_status=error.status or 400,
                )
                raise ProviderRejected(
                    error.message,
                    status=error.status or 400,
                    code=error.code,
                    headers=exchange.headers(candidate, error.model),
                ) from None
            last = error
            exchange.failed(candidate, failure_reason(error))
        except BaseException:
            release(exchange, reservation)  # a no-op when the attempt settled it already
            raise
    if last is None and held is not None:  # nothing was called: the budget's answer
        refuse(exchange, held)
    refusal = exhausted(exchange, last)
    exchange.record(candidate=None, model="", status=Status.ERROR, http_status=refusal.status)
    raise refusal
