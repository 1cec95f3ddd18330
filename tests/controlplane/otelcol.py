"""An OpenTelemetry Collector built from its Go modules, and a throwaway one started by tests.

The binary is the smallest honest collector: the core ``otlp`` receiver and the
``otlphttp`` and ``debug`` exporters, linked from a wrapper module generated under
``<cache>/otelcol-<version>-<digest>/src`` (what the collector's own builder generates for
such a manifest). Built once per pin (:data:`~tests.controlplane.versions.OTELCOL`),
nice'd, and reused while ``--version`` reports the pin.

A test starts :class:`Collector` with the receiver on a free 127.0.0.1 port and
the exporter pointed at an address of its own (an in-test OTLP/HTTP receiver):
spans then travel app → sidecar → collector → test, the way a cluster's do.

    python -m tests.controlplane.otelcol   # build (or find) the binary, print its version
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tests.controlplane import versions
from tests.controlplane.gotool import find_go, go_env
from tests.controlplane.procs import ServerProcess, start_on_free_ports

BINARY = "otelcol-aegis"
_BUILD_TIMEOUT = 900.0

_MAIN_GO = """\
// The Aegis test bed's OpenTelemetry Collector: the OTLP receiver, the otlphttp and
// debug exporters (the core distribution's components the tracing tests need).
package main

import (
\t"log"

\t"go.opentelemetry.io/collector/component"
\t"go.opentelemetry.io/collector/confmap"
\t"go.opentelemetry.io/collector/confmap/provider/envprovider"
\t"go.opentelemetry.io/collector/confmap/provider/fileprovider"
\t"go.opentelemetry.io/collector/exporter"
\t"go.opentelemetry.io/collector/exporter/debugexporter"
\t"go.opentelemetry.io/collector/exporter/otlphttpexporter"
\t"go.opentelemetry.io/collector/otelcol"
\t"go.opentelemetry.io/collector/receiver"
\t"go.opentelemetry.io/collector/receiver/otlpreceiver"
\t"go.opentelemetry.io/collector/service/telemetry/otelconftelemetry"
)

func components() (otelcol.Factories, error) {
\tvar err error
\tfactories := otelcol.Factories{Telemetry: otelconftelemetry.NewFactory()}
\tfactories.Receivers, err = otelcol.MakeFactoryMap[receiver.Factory](otlpreceiver.NewFactory())
\tif err != nil {
\t\treturn otelcol.Factories{}, err
\t}
\tfactories.Exporters, err = otelcol.MakeFactoryMap[exporter.Factory](
\t\totlphttpexporter.NewFactory(), debugexporter.NewFactory())
\tif err != nil {
\t\treturn otelcol.Factories{}, err
\t}
\treturn factories, nil
}

func main() {
\tinfo := component.BuildInfo{
\t\tCommand:     "otelcol-aegis",
\t\tDescription: "OpenTelemetry Collector of the Aegis test bed",
\t\tVersion:     "%(version)s",
\t}
\tset := otelcol.CollectorSettings{
\t\tBuildInfo: info,
\t\tFactories: components,
\t\tConfigProviderSettings: otelcol.ConfigProviderSettings{
\t\t\tResolverSettings: confmap.ResolverSettings{
\t\t\t\tProviderFactories: []confmap.ProviderFactory{
\t\t\t\t\tenvprovider.NewFactory(), fileprovider.NewFactory(),
\t\t\t\t},
\t\t\t},
\t\t},
\t}
\tif err := otelcol.NewCommand(set).Execute(); err != nil {
\t\tlog.Fatal(err)
\t}
}
"""


class CollectorError(RuntimeError):
    """The collector could not be built or started; the message has the log tail."""


def _main_go() -> str:
    return _MAIN_GO % {"version": versions.OTELCOL.lstrip("v")}


def cache_dir() -> Path:
    """``otelcol-<pin>-<digest of the wrapper module>``: a changed wrapper builds anew."""
    digest = hashlib.sha256((_go_mod() + _main_go()).encode()).hexdigest()[:10]
    return versions.testbin_root() / f"otelcol-{versions.OTELCOL}-{digest}"


def _go_mod() -> str:
    ot, stable = versions.OTELCOL, versions.OTELCOL_STABLE
    modules = {
        "component": stable,
        "confmap": stable,
        "confmap/provider/envprovider": stable,
        "confmap/provider/fileprovider": stable,
        "exporter": stable,
        "exporter/debugexporter": ot,
        "exporter/otlphttpexporter": ot,
        "otelcol": ot,
        "receiver": stable,
        "receiver/otlpreceiver": ot,
        "service": ot,
    }
    required = "\n".join(
        f"\tgo.opentelemetry.io/collector/{path} {version}" for path, version in modules.items()
    )
    return f"module aegis.local/testbin/otelcol\n\ngo 1.24\n\nrequire (\n{required}\n)\n"


def _current(binary: Path) -> bool:
    if not os.access(binary, os.X_OK):
        return False
    try:
        done = subprocess.run(
            [str(binary), "--version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0 and versions.OTELCOL.lstrip("v") in done.stdout


def _go() -> str:
    go = find_go()
    if go is None:
        raise CollectorError("no Go toolchain: install Go >= 1.24 or set AEGIS_GO=/path/to/go")
    return go


def _run(argv: list[str], cwd: Path, log: Path) -> None:
    env = go_env()
    nice = ["nice", "-n", "10"] if shutil.which("nice") else []
    with log.open("a") as out:
        out.write(f"$ {' '.join(argv)}\n")
        out.flush()
        try:
            done = subprocess.run(
                [*nice, *argv],
                cwd=cwd,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=_BUILD_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise CollectorError(f"`{' '.join(argv)}` took over {_BUILD_TIMEOUT:.0f}s") from None
    if done.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
        raise CollectorError(f"`{' '.join(argv)}` failed (exit {done.returncode}):\n{tail}")


def ensure_collector(log: bool = True) -> Path:
    """The collector binary for the pinned release, built when missing (once at a time)."""
    directory = cache_dir()
    binary = directory / BINARY
    if _current(binary):
        return binary
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / "build.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _current(binary):  # another session built it meanwhile
            return binary
        started = time.monotonic()
        src = directory / "src"
        src.mkdir(exist_ok=True)
        (src / "go.mod").write_text(_go_mod())
        (src / "main.go").write_text(_main_go())
        build_log = src / "build.log"
        build_log.write_text("")
        if log:
            print(f"[otelcol] building {versions.OTELCOL} in {src} (log: {build_log})", flush=True)
        go = _go()
        _run([go, "mod", "tidy"], src, build_log)
        partial = directory / f".{BINARY}.partial"
        _run([go, "build", "-ldflags", "-s -w", "-o", str(partial), "."], src, build_log)
        os.replace(partial, binary)
        if not _current(binary):
            raise CollectorError(f"{binary} does not report {versions.OTELCOL}")
        if log:
            print(f"[otelcol] built in {time.monotonic() - started:.0f}s", flush=True)
    return binary


class Sink:
    """An OTLP/HTTP traces endpoint in the test process (what a tracing backend would be):
    keeps the raw bodies and the decoded spans with their ``service.name``."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.spans: list[tuple[str, Span]] = []
        self._lock = threading.Lock()
        sink = self

        class Receiver(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status = 200 if self.path == "/v1/traces" else 404
                if status == 200:
                    sink._received(body)
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(status)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def _received(self, body: bytes) -> None:
        export = ExportTraceServiceRequest.FromString(body)
        with self._lock:
            self.bodies.append(body)
            for resource_spans in export.resource_spans:
                resource = attributes_of(resource_spans.resource.attributes)
                for scope in resource_spans.scope_spans:
                    service = str(resource.get("service.name"))
                    self.spans += [(service, span) for span in scope.spans]

    def all(self) -> list[tuple[str, Span]]:
        with self._lock:
            return list(self.spans)

    def of_trace(self, trace_id: bytes) -> list[Span]:
        return [span for _, span in self.all() if span.trace_id == trace_id]

    def exported(self) -> bytes:
        with self._lock:
            return b"".join(self.bodies)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    return getattr(value, kind) if kind else None


def attributes_of(pairs: Iterable[KeyValue]) -> dict[str, Any]:
    """OTLP attributes as a dict (arrays as lists)."""
    return {kv.key: _value(kv.value) for kv in pairs}


def attrs(span: Span) -> dict[str, Any]:
    return attributes_of(span.attributes)


def collector_binary() -> Path:
    """:func:`ensure_collector`, or the test skips (fails under ``CI=true``)."""
    import pytest

    try:
        return ensure_collector()
    except CollectorError as error:
        message = f"OpenTelemetry Collector unavailable: {error}"
        if os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)


class Collector:
    """A running collector: OTLP/HTTP in on :attr:`endpoint`, OTLP/HTTP out to ``forward_to``.

    The receiver listens on ``host`` (loopback by default; the node tests give the host's
    address on the cluster's link, which pods reach)."""

    def __init__(
        self, binary: Path, workdir: Path, forward_to: str, host: str = "127.0.0.1"
    ) -> None:
        self.binary = binary
        self.workdir = workdir
        self.forward_to = forward_to
        self.host = host
        self.endpoint = ""
        self._process: ServerProcess | None = None

    def _config(self, port: int) -> dict[str, object]:
        return {
            "receivers": {
                "otlp": {"protocols": {"http": {"endpoint": f"{self.host}:{port}"}}},
            },
            "exporters": {
                "otlphttp": {
                    "endpoint": self.forward_to,
                    "compression": "none",
                    "retry_on_failure": {"enabled": False},
                    "sending_queue": {"enabled": False},
                },
            },
            "service": {
                "telemetry": {"metrics": {"level": "none"}, "logs": {"level": "info"}},
                "pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["otlphttp"]}},
            },
        }

    def start(self, timeout: float = 30.0) -> None:
        def launch(ports: list[int]) -> ServerProcess:
            config = self.workdir / "otelcol.yaml"
            config.write_text(yaml.safe_dump(self._config(ports[0])))
            process = ServerProcess(
                "otelcol",
                [str(self.binary), "--config", f"file:{config}"],
                self.workdir / "otelcol.log",
            )
            process.start()
            return process

        def ready(ports: list[int]) -> bool:
            return "Everything is ready" in (self.workdir / "otelcol.log").read_text(
                errors="replace"
            )

        try:
            self._process, ports = start_on_free_ports(
                launch, 1, ready, timeout=timeout, what="the OpenTelemetry Collector"
            )
        except (TimeoutError, AssertionError) as error:
            raise CollectorError(str(error)) from None
        self.endpoint = f"http://{self.host}:{ports[0]}"

    def stop(self) -> None:
        if self._process is not None:
            self._process.stop()
            self._process = None

    def log_tail(self, lines: int = 30) -> str:
        return self._process.log_tail(lines) if self._process else ""


def main() -> int:
    started = time.monotonic()
    try:
        binary = ensure_collector()
    except CollectorError as error:
        print(f"[otelcol] FAILED: {error}", file=sys.stderr)
        return 1
    version = subprocess.run(
        [str(binary), "--version"], capture_output=True, text=True, check=False
    )
    print(f"[otelcol] {version.stdout.strip()} at {binary} ({time.monotonic() - started:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
