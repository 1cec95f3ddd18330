"""When traces are on: only the standard OTEL_* variables decide, and off costs no import."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from aegis.sidecar.runtime.tracing import TracingConfigError, tracing_wanted

_NOT_OTEL = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}


@pytest.mark.parametrize(
    ("environ", "wanted"),
    [
        ({}, False),
        ({"OTEL_SERVICE_NAME": "app"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, True),
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, False),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, False),
        ({"OTEL_SDK_DISABLED": "false", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, True),
    ],
)
def test_the_standard_variables_decide(environ: dict[str, str], wanted: bool) -> None:
    assert tracing_wanted(environ) is wanted


def test_an_exporter_this_build_lacks_is_named() -> None:
    with pytest.raises(TracingConfigError, match="OTEL_TRACES_EXPORTER='zipkin'"):
        tracing_wanted({"OTEL_TRACES_EXPORTER": "zipkin"})


_PROBE = """
import os, sys
import aegis.operator.cli, aegis.sidecar.http.server, aegis.sidecar.exchange
from aegis.sidecar.runtime.tracing import request_tracer
tracer = request_tracer(os.environ)
print(tracer is not None, sorted(m for m in sys.modules if m.startswith("opentelemetry"))[:1])
"""


def _probe(extra: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE],
        env={**_NOT_OTEL, **extra},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return done.stdout.strip()


def test_off_imports_nothing_of_opentelemetry() -> None:
    assert _probe({}) == "False []"
    assert _probe({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}) == "False []"


def test_on_builds_the_sdk_tracer() -> None:
    out = _probe({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"})
    assert out.startswith("True ['opentelemetry")


def test_an_unsupported_protocol_is_named() -> None:
    with pytest.raises(subprocess.CalledProcessError) as failed:
        _probe({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"})
    assert "OTEL_EXPORTER_OTLP_PROTOCOL='http/json' is not supported" in failed.value.stderr
