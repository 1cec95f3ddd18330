"""One request from decision to settled ledger row.

The router decides (pure); this module does the effects in DESIGN.md's order:
reserve the worst-case cost, call the provider, on a retriable failure release
and move to the next candidate, settle the real cost, append the ledger row,
count the metrics. The HTTP layer only parses and answers; streaming relay
lives in :mod:`aegis.sidecar.http.relay`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, TypeVar

from ..adapters.base import (
    ErrorKind,
    UpstreamCall,
    UpstreamError,
    UpstreamResult,
    Usage,
)
from ..budgets.book import Exceeded, Reservation
from ..contract import OnExceeded
from ..contract.money import ZERO
from ..errors import (
    AegisError,
    NoProviderAvailable,
    ProviderRejected,
    UpstreamBadGateway,
    UpstreamRateLimited,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from ..ledger.models import LedgerRecord, Status
from ..request.facts import HEADER_USER, Headers, Kind, RequestFacts, build_facts
from ..request.pricing import cost, price_for
from ..routing.refusals import budget_refusal
from ..routing.router import (
    REASON_PRIVACY,
    REASON_TARGET,
    Candidate,
    RouteDecision,
    choose_arm,
    route,
)
from ..runtime.process import Runtime, Snapshot

log = logging.getLogger("aegis.sidecar.exchange.pipeline")

T = TypeVar("T")


_UUID4_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))
_UUID4_SET = (0x4000 << 64) | (0x8000 << 48)


def new_request_id() -> str:
    """A random UUID (version 4) as 32 hex digits: ``uuid.uuid4().hex`` at half the cost."""
    return "%032x" % (int.from_bytes(os.urandom(16), "big") & _UUID4_CLEAR | _UUID4_SET)


@dataclass(slots=True)
class Exchange:
    """Everything known about one request while it is being served."""

    runtime: Runtime
    snapshot: Snapshot
    facts: RequestFacts
    decision: RouteDecision
    body: Mapping[str, Any]
    started: float = field(default_factory=time.perf_counter)
    request_id: str = field(default_factory=new_request_id)
    fallbacks: list[str] = field(default_factory=list)
    attempts: int = 0
    local_only_after_budget: bool = False

    # -- the answer's headers -------------------------------------------------

    def headers(self, candidate: Candidate | None, model: str | None) -> dict[str, str]:
        headers = {
            "X-Aegis-Request-Id": self.request_id,
            "X-Aegis-Arm": self.decision.arm,
            "X-Aegis-Rule": self.decision.rule,
            "X-Aegis-Data-Class": self.facts.data_class,
        }
        if candidate is not None:
            headers["X-Aegis-Provider"] = candidate.provider.name
        if model:
            headers["X-Aegis-Model"] = model
        if self.fallbacks:
            headers["X-Aegis-Fallback"] = ",".join(self.fallbacks)
        return headers

    def elapsed_ms(self) -> int:
        return int((time.perf_counter() - self.started) * 1000)

    # -- budget ---------------------------------------------------------------

    async def reserve(self, candidate: Candidate) -> Reservation | None:
        """Reserve the worst case (``None`` for a free provider without budgets).

        A budget that cannot cover it raises the budget refusal (``Reject``) or
        :class:`_Skip` (``FallbackLocal``: from now on only local providers).
        Suspends only when a shared-budget lease must be topped up first."""
        book = self.runtime.budgets
        if candidate.worst_case_usd <= ZERO and not self.snapshot.config.budgets_for(
            candidate.provider.name
        ):
            return None
        outcome = await book.acquire(candidate.provider.name, candidate.worst_case_usd)
        if isinstance(outcome, Exceeded):
            budget = outcome.budget
            if budget.on_exceeded is OnExceeded.REJECT:
                raise budget_refusal(
                    budget,
                    outcome.reason,
                    needed=outcome.needed,
                    period=outcome.period,
                    available=outcome.available,
                )
            self.local_only_after_budget = True
            raise _Skip(outcome.reason)
        return outcome

    def settle(self, reservation: Reservation | None, amount: Decimal) -> Decimal:
        if reservation is None:
            return amount
        return self.runtime.budgets.settle(reservation, amount)

    def release(self, reservation: Reservation | None) -> None:
        if reservation is not None:
            self.runtime.budgets.release(reservation)

    def period_of(self, reservation: Reservation | None, provider: str) -> str:
        if reservation is not None:
            return reservation.period
        return self.runtime.budgets.period(provider)

    # -- ledger and metrics -----------------------------------------------------

    def record(
        self,
        *,
        candidate: Candidate | None,
        model: str,
        status: Status,
        http_status: int,
        usage: Usage | None = None,
        cost_usd: Decimal = ZERO,
        period: str | None = None,
        ttft_ms: int | None = None,
    ) -> None:
        config = self.snapshot.config
        provider = candidate.provider.name if candidate is not None else "none"
        latency_ms = self.elapsed_ms()
        self.runtime.ledger.append(
            LedgerRecord(
                request_id=self.request_id,
                created_at=datetime.now(UTC),
                period=period or datetime.now(UTC).strftime("%Y-%m"),
                namespace=config.identity.namespace,
                pod=self.runtime.pod,
                route=config.identity.route,
                rule=self.decision.rule,
                arm=self.decision.arm,
                provider=provider,
                model=model or "none",
                data_class=self.facts.data_class,
                tokens_in=usage.prompt_tokens if usage else 0,
                tokens_out=usage.completion_tokens if usage else 0,
                cost_usd=cost_usd,
                latency_ms=latency_ms,
                ttft_ms=ttft_ms,
                status=status,
                http_status=http_status,
                fallback_reason=",".join(self.fallbacks)[:64] or None,
                attempts=self.attempts,
            )
        )
        m = self.runtime.metrics
        series = m.outcome(provider, model or "none", status.value, self.decision.arm)
        series.requests.inc()
        series.duration.observe(latency_ms / 1000)
        series.rollout.inc()
        if usage is not None and candidate is not None:
            tokens_in, tokens_out = m.token_counters(provider, model)
            tokens_in.inc(usage.prompt_tokens)
            tokens_out.inc(usage.completion_tokens)
        if cost_usd > ZERO:
            m.cost_counter(provider, model).inc(float(cost_usd))

    def failed(self, candidate: Candidate, reason: str) -> None:
        self.fallbacks.append(f"{candidate.provider.name}:{reason}")
        self.runtime.metrics.fallbacks.labels(candidate.provider.name, reason).inc()


class _Skip(Exception):
    """A candidate is passed over before any call (reason in ``args[0]``)."""


def begin(
    runtime: Runtime,
    snapshot: Snapshot,
    kind: Kind,
    body: Mapping[str, Any],
    headers: Headers | Mapping[str, str],
) -> Exchange:
    """Validate and route a parsed request under one config ``snapshot``; raises
    ``BadRequest`` for bad input and the router's refusal when there is one.

    The facts (data class, sticky key) and the route come from the same snapshot,
    which the caller took once for the whole request: a hot reload landing
    meanwhile must not judge the data under one config and route it under another.
    """
    config = snapshot.config
    sticky = config.rollout.stickiness.header if config.rollout else HEADER_USER
    facts = build_facts(kind, body, headers, config.privacy, sticky_header=sticky)
    arm = choose_arm(config.rollout, facts.user_key, random.random(), route=config.identity.route)
    decision = route(facts, config, runtime.budgets, runtime.adapters, arm)
    exchange = Exchange(runtime, snapshot, facts, decision, body)
    m = runtime.metrics
    for detected in facts.detected:
        m.pii_detections.labels(detected).inc()
    if decision.refusal is not None:
        refusal = decision.refusal
        if refusal.code == "privacy_no_local_provider":
            m.privacy.labels(facts.data_class, "blocked").inc()
        m.refusals.labels(refusal.code).inc()
        exchange.record(candidate=None, model="", status=Status.REFUSED, http_status=refusal.status)
        raise refusal.with_headers(exchange.headers(None, None))
    # The target is considered first; when it was passed over, say why. Skips of
    # later fallback entries did not change the answer and are not reported.
    if decision.candidates[0].reason != REASON_TARGET and decision.skipped:
        provider, reason = decision.skipped[0]
        exchange.fallbacks.append(f"{provider}:{reason}")
        if reason == REASON_PRIVACY:
            m.privacy.labels(facts.data_class, "rerouted").inc()
    return exchange


def actual_cost(candidate: Candidate, model: str, usage: Usage | None) -> Decimal:
    """The real cost from usage; without usage, the reserved worst case (never less)."""
    if usage is None:
        return candidate.worst_case_usd
    price = price_for(candidate.provider, model) or candidate.price
    if price is None:
        return ZERO
    return cost(price, usage.prompt_tokens, usage.completion_tokens)


def upstream_call(exchange: Exchange, candidate: Candidate) -> UpstreamCall:
    return UpstreamCall(
        body=exchange.body,
        models=candidate.models,
        max_tokens=candidate.max_tokens_to_send,
        vision=exchange.facts.has_images,
    )


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


async def first_answer(
    exchange: Exchange,
    attempt: Callable[[Candidate, Reservation | None], Awaitable[T]],
) -> tuple[Candidate, Reservation | None, T]:
    """Try the candidates in order (DESIGN.md steps 4-5): reserve, ``attempt`` the call,
    and on a retriable failure release and move on. A client-fault answer (400-class)
    goes back to the client; when every candidate fails, raise the 502/503/504
    :class:`~aegis.sidecar.errors.UpstreamFailure`. On success the reservation is
    still open: the caller settles."""
    last: UpstreamError | None = None
    for candidate in exchange.decision.candidates:
        if not usable(exchange, candidate):
            continue
        try:
            reservation = await exchange.reserve(candidate)
        except _Skip as skip:
            exchange.failed(candidate, str(skip))
            continue
        exchange.attempts += 1
        try:
            return candidate, reservation, await attempt(candidate, reservation)
        except UpstreamError as error:
            exchange.release(reservation)
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
            exchange.failed(candidate, _reason(error))
        except BaseException:
            exchange.release(reservation)  # a no-op when the attempt settled it already
            raise
    refusal = exhausted(exchange, last)
    exchange.record(candidate=None, model="", status=Status.ERROR, http_status=refusal.status)
    raise refusal


async def complete(exchange: Exchange, kind: Kind) -> tuple[bytes, dict[str, str], int]:
    """Non-streaming chat or embeddings: the first candidate's success, settled and
    recorded. Returns (body, headers, status) or raises an
    :class:`~aegis.sidecar.errors.AegisError`."""

    async def call(candidate: Candidate, reservation: Reservation | None) -> UpstreamResult:
        adapter = exchange.runtime.adapters.get(candidate.provider.name)
        request = upstream_call(exchange, candidate)
        try:
            if kind == "chat":
                return await adapter.chat(request)
            return await adapter.embeddings(request)
        except asyncio.CancelledError:
            # The client went away; the provider may still bill the whole answer.
            charged = exchange.settle(reservation, candidate.worst_case_usd)
            exchange.record(
                candidate=candidate,
                model=candidate.models[0],
                status=Status.CANCELLED,
                http_status=499,
                cost_usd=charged,
                period=exchange.period_of(reservation, candidate.provider.name),
            )
            raise

    candidate, reservation, result = await first_answer(exchange, call)
    charged = exchange.settle(reservation, actual_cost(candidate, result.model, result.usage))
    exchange.record(
        candidate=candidate,
        model=result.model,
        status=Status.OK,
        http_status=200,
        usage=result.usage,
        cost_usd=charged,
        period=exchange.period_of(reservation, candidate.provider.name),
    )
    headers = exchange.headers(candidate, result.model)
    headers["X-Aegis-Cost-USD"] = f"{charged:f}"
    headers["Content-Type"] = result.content_type
    return result.body, headers, result.status


def _reason(error: UpstreamError) -> str:
    if error.kind is ErrorKind.STATUS and error.status is not None:
        return f"status_{error.status}"
    return error.kind.value
