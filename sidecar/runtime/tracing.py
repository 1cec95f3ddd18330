"""OpenTelemetry traces of the requests, when the standard ``OTEL_*`` environment asks.

Off unless the environment turns it on: ``OTEL_TRACES_EXPORTER`` set to ``otlp`` (or
``console``), or an OTLP endpoint (``OTEL_EXPORTER_OTLP_ENDPOINT``,
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``). ``OTEL_SDK_DISABLED=true`` or
``OTEL_TRACES_EXPORTER=none`` keep it off whatever else is set. Off, nothing of
OpenTelemetry is imported and a request pays a few ``is None`` tests. On, the SDK reads
its own variables: ``OTEL_SERVICE_NAME`` (default ``aegis-sidecar``),
``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_TRACES_SAMPLER``, ``OTEL_BSP_*`` and the
exporter's ``OTEL_EXPORTER_OTLP_*`` (protocol ``http/protobuf``, the default, or
``grpc`` when its exporter package is installed).

One span per request (kind SERVER, the child of the app's ``traceparent``) and one
child per upstream attempt (kind CLIENT, whose ``traceparent`` goes to the provider),
both named ``{gen_ai.operation.name} {model}`` and carrying the GenAI semantic
conventions' attributes plus ``aegis.*`` ones: rule, rollout arm, data class, budget
decision, privacy action, cost. Never prompt or completion text: names, counts,
classes and money only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ..adapters import Usage
from ..contract import ProviderSpec, ProviderType
from ..errors import AegisError
from ..request import RequestFacts
from ..routing import Candidate, RouteDecision

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, Tracer

_ON = ("otlp", "console")
_BUDGET_CODES = frozenset({"budget_exceeded", "budget_unavailable"})
# gen_ai.provider.name: the conventions' well-known values where a type has one.
_PROVIDER_NAMES = {
    ProviderType.OPENAI: "openai",
    ProviderType.ANTHROPIC: "anthropic",
    ProviderType.DASHSCOPE: "dashscope",
    ProviderType.OLLAMA: "ollama",
}


class TracingConfigError(ValueError):
    """The OTEL_* environment asks for something this build cannot do."""


def tracing_wanted(environ: Mapping[str, str]) -> bool:
    """Whether the standard OTEL_* variables turn traces on (they are off by default)."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter:
        if exporter == "none":
            return False
        if exporter not in _ON:
            raise TracingConfigError(
                f"OTEL_TRACES_EXPORTER={exporter!r} is not supported; use otlp, console or none"
            )
        return True
    return any(
        environ.get(name, "").strip()
        for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


def tracer_provider(environ: Mapping[str, str], service: str) -> TracerProvider:
    """The SDK's tracer provider with a batching exporter, as the environment says.

    Imports OpenTelemetry: call only when :func:`tracing_wanted`."""
    try:
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            ConsoleSpanExporter,
            SpanExporter,
        )
    except ImportError as missing:
        raise TracingConfigError(
            f"OTEL_* asks for traces but OpenTelemetry is not installed ({missing}); "
            "install the tracing extra: aegis-llm[tracing]"
        ) from None
    exporter: SpanExporter
    if environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "console":
        exporter = ConsoleSpanExporter()
    else:
        exporter = _otlp_exporter(environ)
    # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win over the default name.
    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: service}))
    provider = TracerProvider(resource=resource)
    size, delay = _batching(environ)
    processor = BatchSpanProcessor(
        exporter, max_export_batch_size=size, schedule_delay_millis=delay
    )
    provider.add_span_processor(processor)
    return provider


def _batching(environ: Mapping[str, str]) -> tuple[int | None, float | None]:
    """Smaller, more frequent batches than the SDK's (512 spans, 5 s) unless OTEL_BSP_*
    says otherwise: the exporter's thread encodes a batch holding the GIL, and a 512-span
    batch held requests in flight for tens of milliseconds (p99 at c=1 tripled)."""
    size = None if environ.get("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "").strip() else 64
    delay = None if environ.get("OTEL_BSP_SCHEDULE_DELAY", "").strip() else 1000.0
    return size, delay  # None: the SDK reads the variable


def _otlp_exporter(environ: Mapping[str, str]) -> Any:
    protocol = (
        environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "").strip()
        or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "").strip()
        or "http/protobuf"
    ).lower()
    if protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    if protocol == "grpc":
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # type: ignore[import-not-found,unused-ignore]
                OTLPSpanExporter as GrpcSpanExporter,
            )
        except ImportError:
            raise TracingConfigError(
                "OTEL_EXPORTER_OTLP_PROTOCOL=grpc needs opentelemetry-exporter-otlp-proto-grpc "
                "installed; the image ships http/protobuf"
            ) from None
        return GrpcSpanExporter()
    raise TracingConfigError(
        f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r} is not supported; use http/protobuf or grpc"
    )


def request_tracer(environ: Mapping[str, str]) -> RequestTracer | None:
    """The sidecar's tracer, or None when the environment leaves tracing off."""
    if not tracing_wanted(environ):
        return None
    return RequestTracer(tracer_provider(environ, "aegis-sidecar"))


def provider_name(spec: ProviderSpec) -> str:
    """``gen_ai.provider.name`` of a provider: the conventions' value for its type, the
    SDK's provider for any-llm, else the configured name."""
    if spec.type is ProviderType.ANY_LLM and spec.sdk_provider:
        return spec.sdk_provider
    return _PROVIDER_NAMES.get(spec.type, spec.name)


class RequestTracer:
    """Starts one :class:`RequestTrace` per request; flushes the exporter on close."""

    def __init__(self, provider: TracerProvider) -> None:
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self._provider = provider
        self.tracer: Tracer = provider.get_tracer("aegis.sidecar")
        self.propagator = TraceContextTextMapPropagator()

    def start(self, operation: str, headers: Any) -> RequestTrace:
        """The request's span, the child of the app's ``traceparent`` when it sent one."""
        from opentelemetry.trace import SpanKind

        parent = self.propagator.extract(headers)
        span = self.tracer.start_span(
            operation,
            context=parent,
            kind=SpanKind.SERVER,
            attributes={"gen_ai.operation.name": operation},
        )
        return RequestTrace(self, span, operation)

    async def aclose(self) -> None:
        await asyncio.to_thread(self._provider.shutdown)  # exports what is still queued


class RequestTrace:
    """The spans of one request: the request's own and the open upstream attempt's."""

    __slots__ = ("_attempt", "_ended", "_operation", "_span", "_tracer", "_upstream")

    def __init__(self, tracer: RequestTracer, span: Span, operation: str) -> None:
        self._tracer = tracer
        self._span = span
        self._operation = operation
        self._attempt: Span | None = None
        self._upstream: dict[str, str] = {}
        self._ended = False

    def routed(self, facts: RequestFacts, decision: RouteDecision, route: str) -> None:
        model = facts.model or "auto"
        self._span.update_name(f"{self._operation} {model}")
        attributes: dict[str, Any] = {
            "gen_ai.request.model": model,
            "aegis.route": route,
            "aegis.rule": decision.rule,
            "aegis.rollout.arm": str(decision.arm),
            "aegis.data_class": facts.data_class,
            "aegis.declared_class": facts.declared_class,
            "aegis.stream": facts.stream,
        }
        if facts.max_tokens is not None:
            attributes["gen_ai.request.max_tokens"] = facts.max_tokens
        if facts.detected:
            attributes["aegis.pii_detectors"] = sorted(facts.detected)
        self._span.set_attributes(attributes)

    def begin_attempt(self, candidate: Candidate, number: int) -> None:
        """A call to ``candidate`` starts: its CLIENT span, whose context goes upstream."""
        from opentelemetry.trace import SpanKind, set_span_in_context

        self._end_attempt()
        spec = candidate.provider
        model = candidate.models[0]
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": self._operation,
            "gen_ai.provider.name": provider_name(spec),
            "gen_ai.request.model": model,
            "aegis.provider": spec.name,
            "aegis.attempt": number,
            "aegis.candidate_reason": candidate.reason,
        }
        base = spec.resolved_base_url
        if base:
            url = urlsplit(base)
            if url.hostname:
                attributes["server.address"] = url.hostname
                attributes["server.port"] = url.port or (443 if url.scheme == "https" else 80)
        self._attempt = self._tracer.tracer.start_span(
            f"{self._operation} {model}",
            context=set_span_in_context(self._span),
            kind=SpanKind.CLIENT,
            attributes=attributes,
        )
        self._upstream = {}
        self._tracer.propagator.inject(self._upstream, context=set_span_in_context(self._attempt))

    def upstream_headers(self) -> dict[str, str]:
        """``traceparent`` (and ``tracestate``) of the open attempt, for the provider."""
        return dict(self._upstream)

    def attempt_failed(self, reason: str) -> None:
        """The open attempt failed (the request may fall back to the next candidate)."""
        if self._attempt is None:
            return
        from opentelemetry.trace import StatusCode

        self._attempt.set_attribute("error.type", reason)
        self._attempt.set_status(StatusCode.ERROR, reason)
        self._end_attempt()

    def finish(
        self,
        *,
        candidate: Candidate | None,
        model: str,
        status: str,
        http_status: int,
        usage: Usage | None,
        cost_usd: Decimal,
        fallbacks: list[str],
        attempts: int,
        privacy_action: str,
        local_only_after_budget: bool,
        refusal: AegisError | None,
    ) -> None:
        """The request's outcome: end the open attempt and the request's span."""
        if self._ended:
            return
        from opentelemetry.trace import StatusCode

        self._ended = True
        outcome: dict[str, Any] = {
            "aegis.status": status,
            "http.response.status_code": http_status,
            "aegis.attempts": attempts,
            "aegis.privacy.action": privacy_action,
            "aegis.budget.decision": _budget_decision(status, local_only_after_budget, refusal),
            "aegis.cost_usd": float(cost_usd),
        }
        if fallbacks:
            outcome["aegis.fallbacks"] = list(fallbacks)
        if candidate is not None:
            outcome["gen_ai.provider.name"] = provider_name(candidate.provider)
            outcome["aegis.provider"] = candidate.provider.name
        if model:
            outcome["gen_ai.response.model"] = model
        if usage is not None:
            outcome["gen_ai.usage.input_tokens"] = usage.prompt_tokens
            outcome["gen_ai.usage.output_tokens"] = usage.completion_tokens
        if refusal is not None:
            outcome["error.type"] = refusal.code
        elif status != "ok":
            outcome["error.type"] = status
        attempt = self._attempt
        if attempt is not None:
            answered = {k: v for k, v in outcome.items() if k.startswith("gen_ai.")}
            attempt.set_attributes(answered)
            if status != "ok":
                attempt.set_attribute("error.type", outcome["error.type"])
                attempt.set_status(StatusCode.ERROR, status)
            self._end_attempt()
        self._span.set_attributes(outcome)
        if http_status >= 500:
            self._span.set_status(StatusCode.ERROR, str(outcome.get("error.type", status)))
        self._span.end()

    def abandon(self, error: BaseException) -> None:
        """The request ended before an outcome was recorded (bad input, say)."""
        if self._ended:
            return
        self._ended = True
        self._end_attempt()
        code = error.code if isinstance(error, AegisError) else type(error).__name__
        status = error.status if isinstance(error, AegisError) else 500
        self._span.set_attributes({"error.type": code, "http.response.status_code": status})
        if status >= 500:
            from opentelemetry.trace import StatusCode

            self._span.set_status(StatusCode.ERROR, code)
        self._span.end()

    def _end_attempt(self) -> None:
        if self._attempt is not None:
            self._attempt.end()
            self._attempt = None


def _budget_decision(status: str, local_only: bool, refusal: AegisError | None) -> str:
    """``refused`` (a budget's answer), ``fallback_local`` (a FallbackLocal budget left
    only local providers) or ``within`` (every budget that applies covered it)."""
    if refusal is not None and refusal.code in _BUDGET_CODES:
        return "refused"
    if local_only:
        return "refused" if status == "refused" else "fallback_local"
    return "within"
