"""The record of one request while it is served: identity, headers, ledger row, metrics.

An :class:`Exchange` is created once the router has decided; whatever happens
next (attempts, fallbacks, the answer or a refusal) is written into it, and
:meth:`Exchange.record` turns it into exactly one ledger row and its metrics.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from ..adapters import Usage
from ..contract.money import ZERO
from ..contract.periods import period_of
from ..errors import AegisError
from ..ledger import LedgerRecord, Status
from ..limits import Admission, PoolState
from ..limits.headers import rate_headers
from ..request import PrivacyAction, RequestFacts, local_action
from ..routing import Candidate, RouteDecision
from ..runtime import RequestTrace, Runtime, Snapshot

# Random bits for the next request ids, read from the OS 256 ids at a time: one
# getrandom(2) per request was a system call that also let go of the GIL (and any
# other thread could keep it for a switch interval) in the middle of the request.
_IDS_PER_READ = 256
_random_ids: list[int] = []
os.register_at_fork(after_in_child=_random_ids.clear)  # a child must not reuse them
_VERSION_7 = 0x7 << 76
_VARIANT = 0x2 << 62
_RAND_B = (1 << 62) - 1


def new_request_id() -> str:
    """A time-ordered UUID (version 7, RFC 9562) as 32 hex digits: the Unix time in
    milliseconds, then the sub-millisecond fraction in the 12 bits of ``rand_a``
    (the RFC's method 3), then 62 random bits (``os.urandom``, read ahead in blocks;
    ``list.pop`` hands each out once).

    Time-ordered ids keep the ledger's primary-key index append-only: each new row
    lands on the index's last page instead of a random one, so a batch dirties a
    page or two rather than one per row (SQLite writes every dirty page to its WAL
    at commit; PostgreSQL's B-tree has a fast path for the rightmost leaf), and the
    index's working set stays small however large the ledger grows. The random bits
    keep ids unguessable: the ledger skips a row whose id it already holds."""
    try:
        bits = _random_ids.pop()
    except IndexError:
        block = os.urandom(8 * _IDS_PER_READ)
        _random_ids.extend(int.from_bytes(block[i : i + 8], "big") for i in range(0, len(block), 8))
        bits = _random_ids.pop()
    ms, ns = divmod(time.time_ns(), 1_000_000)
    return "%032x" % (
        (ms << 80) | _VERSION_7 | ((ns << 12) // 1_000_000) << 64 | _VARIANT | (bits & _RAND_B)
    )


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
    masked_body: Mapping[str, Any] | None = None  # the body cloud candidates receive
    masked: bool = False  # the answer came from a call with masked values
    blocked: bool = False  # refused: local-only and no local provider left
    trace: RequestTrace | None = None  # the request's spans when tracing is on
    rates: list[Admission] = field(default_factory=list)  # rate-limit slots held
    rate_states: tuple[PoolState, ...] = ()  # the limits it fell under, for the headers

    def privacy_action(self) -> PrivacyAction:
        """What privacy did to this request, as the ledger and metrics record it."""
        if self.blocked:
            return PrivacyAction.BLOCKED
        if self.masked:
            return PrivacyAction.MASKED
        privacy = self.snapshot.config.privacy
        return local_action(self.facts.declared_class, self.facts.data_class, privacy)

    def headers(self, candidate: Candidate | None, model: str | None) -> dict[str, str]:
        """The ``X-Aegis-*`` headers of the answer (or of the error instead of it)."""
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
        if self.rate_states:
            headers.update(rate_headers(self.rate_states))
        return headers

    def elapsed_ms(self) -> int:
        return int((time.perf_counter() - self.started) * 1000)

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
        charges: str = "",
        ttft_ms: int | None = None,
        refusal: AegisError | None = None,
    ) -> None:
        """Append the request's one ledger row and count its metrics; ``refusal``: the
        answer when the exchange (not the router) refused the request."""
        if self.rates:  # tokens used stay busy a window, the rest of the estimate returns
            tokens = None if usage is None else usage.prompt_tokens + usage.completion_tokens
            answered = candidate.provider.name if candidate is not None else None
            for admission in self.rates:
                admission.finish(answered, tokens)
        config = self.snapshot.config
        provider = candidate.provider.name if candidate is not None else "none"
        latency_ms = self.elapsed_ms()
        now = datetime.now(UTC)
        self.runtime.ledger.append(
            LedgerRecord(
                request_id=self.request_id,
                created_at=now,
                period=period or period_of(now),  # strftime cost ~1.5 us
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
                declared_class=self.facts.declared_class,
                pii_detectors=",".join(sorted(self.facts.detected)) or None,
                privacy_action=self.privacy_action().value,
                workload=self.runtime.workload,
                service_account=self.runtime.service_account,
            ),
            charges,
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
        if self.masked:
            m.privacy.labels(self.facts.data_class, PrivacyAction.MASKED).inc()
        if self.trace is not None:
            self.trace.finish(
                candidate=candidate,
                model=model,
                status=status.value,
                http_status=http_status,
                usage=usage,
                cost_usd=cost_usd,
                fallbacks=self.fallbacks,
                attempts=self.attempts,
                privacy_action=self.privacy_action().value,
                local_only_after_budget=self.local_only_after_budget,
                refusal=refusal or self.decision.refusal,
            )

    def failed(self, candidate: Candidate, reason: str) -> None:
        """``candidate`` was passed over or failed: say so in headers, row and metrics."""
        self.fallbacks.append(f"{candidate.provider.name}:{reason}")
        self.runtime.metrics.fallbacks.labels(candidate.provider.name, reason).inc()
        if self.trace is not None:
            self.trace.attempt_failed(reason)
