"""OpenTelemetry spans of the operator's reconciles, when the ``OTEL_*`` environment asks.

The same switch as the sidecar's: off unless ``OTEL_TRACES_EXPORTER`` is ``otlp``
(or ``console``) or an OTLP endpoint is set; ``OTEL_SDK_DISABLED=true`` or
``OTEL_TRACES_EXPORTER=none`` keep it off. Off, nothing of OpenTelemetry is imported
and the handlers are registered unwrapped. On, every kopf handler runs inside a span
``reconcile <Kind>`` (kind INTERNAL) with the object's kind, namespace and name and the
event (create, update, resume, delete, resync, rollout, sync); a handler that raises
marks its span as an error. ``OTEL_SERVICE_NAME`` defaults to ``aegis-operator``.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

Handler = Callable[..., Awaitable[Any]]


class TracingConfigError(ValueError):
    """The OTEL_* environment asks for something this build cannot do."""


def tracing_wanted(environ: Mapping[str, str]) -> bool:
    """Whether the standard OTEL_* variables turn traces on (they are off by default)."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter:
        if exporter not in ("otlp", "console", "none"):
            raise TracingConfigError(
                f"OTEL_TRACES_EXPORTER={exporter!r} is not supported; use otlp, console or none"
            )
        return exporter != "none"
    return any(
        environ.get(name, "").strip()
        for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


def _provider(environ: Mapping[str, str]) -> TracerProvider:
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
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
    protocol = (
        environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "").strip()
        or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "").strip()
        or "http/protobuf"
    )
    exporter: SpanExporter
    if environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "console":
        exporter = ConsoleSpanExporter()
    elif protocol == "http/protobuf":
        exporter = OTLPSpanExporter()
    else:
        raise TracingConfigError(
            f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r}: the operator exports http/protobuf"
        )
    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: "aegis-operator"}))
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


class ReconcileTracer:
    """Wraps kopf handlers in a span per call; flushes the exporter on close."""

    def __init__(self, provider: TracerProvider) -> None:
        self._provider = provider
        self._tracer = provider.get_tracer("aegis.operator")

    def wrap(self, kind: str, event: str, handler: Handler) -> Handler:
        """``handler`` (called by kopf with keyword arguments) inside a span."""
        from opentelemetry.trace import SpanKind, Status, StatusCode

        tracer = self._tracer

        @functools.wraps(handler)
        async def traced(**kwargs: Any) -> Any:
            namespace = kwargs.get("namespace") or ""
            name = kwargs.get("name") or ""
            attributes = {
                "aegis.reconcile.kind": kind,
                "aegis.reconcile.event": event,
                "k8s.namespace.name": str(namespace),
                "aegis.reconcile.name": str(name),
            }
            with tracer.start_as_current_span(
                f"reconcile {kind}",
                kind=SpanKind.INTERNAL,
                attributes=attributes,
                record_exception=False,
                set_status_on_exception=False,
            ) as span:
                try:
                    return await handler(**kwargs)
                except BaseException as error:
                    # The type only: a message may quote the object.
                    span.set_attribute("error.type", type(error).__name__)
                    span.set_status(Status(StatusCode.ERROR, type(error).__name__))
                    raise

        return traced

    async def aclose(self) -> None:
        await asyncio.to_thread(self._provider.shutdown)


def reconcile_tracer(environ: Mapping[str, str]) -> ReconcileTracer | None:
    """The operator's tracer, or None when the environment leaves tracing off."""
    if not tracing_wanted(environ):
        return None
    return ReconcileTracer(_provider(environ))
