"""The operator's reconciles as OpenTelemetry spans, read back through a real collector."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.controlplane.kube import Kube
from tests.controlplane.otelcol import Collector, CollectorError, Sink, attrs, collector_binary
from tests.operator.harness import OperatorProcess, poll
from tests.operator.test_routes import origin_route

pytestmark = pytest.mark.slow


@pytest.fixture
def traced_operator(
    operator: OperatorProcess, tmp_path: Path
) -> Iterator[tuple[OperatorProcess, Sink]]:
    """The package's operator restarted with OTEL_* pointing at a collector, and back."""
    sink = Sink()
    collector = Collector(collector_binary(), tmp_path, forward_to=sink.url)
    try:
        collector.start()
    except CollectorError as error:
        sink.close()
        pytest.fail(str(error), pytrace=False)
    operator.stop()
    operator.extra_env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "50",
    }
    try:
        operator.start()
        yield operator, sink
    finally:
        operator.stop()
        operator.extra_env = {}
        operator.start()
        collector.stop()
        sink.close()


def test_a_route_reconcile_is_a_span_naming_the_object(
    kube: Kube, ns: str, traced_operator: tuple[OperatorProcess, Sink]
) -> None:
    _, sink = traced_operator
    kube.apply(origin_route(name="traced"), namespace=ns)

    def reconciled() -> dict[str, object] | None:
        for service, span in sink.all():
            got = attrs(span)
            if got.get("k8s.namespace.name") == ns and got.get("aegis.reconcile.name") == "traced":
                assert service == "aegis-operator"
                assert span.name == "reconcile LLMRoute"
                return got
        return None

    got = poll(reconciled, timeout=45, what="the reconcile's span at the collector's receiver")
    assert got["aegis.reconcile.kind"] == "LLMRoute"
    assert got["aegis.reconcile.event"] in {"create", "resume", "update"}
