"""Injector settings: command-line flags, each with an environment-variable default.

Helm values reach the injector as environment variables of its Deployment
(``AEGIS_INJECTOR_<FLAG>``, e.g. ``AEGIS_INJECTOR_SIDECAR_RESOURCES='{"requests": …}'``),
so the chart never has to build an argument list; a flag given on the command line
wins over the variable. This module imports nothing heavy: ``aegis --help`` builds
the parser and must stay fast.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

NativeMode = Literal["auto", "always", "never"]
TlsMode = Literal["secret", "files"]

ENV_PREFIX = "AEGIS_INJECTOR_"
DEFAULT_IMAGE = "ghcr.io/aegis-llm/aegis"
NATIVE_SIDECAR_MIN_MINOR = 29
"""Native sidecars (init containers with ``restartPolicy: Always``) are on by default
from Kubernetes 1.29 (beta there, GA in 1.33)."""

DEFAULT_RESOURCES: Mapping[str, Any] = {
    "requests": {"cpu": "50m", "memory": "96Mi"},
    "limits": {"memory": "256Mi"},
}


def injector_version() -> str:
    """The version stamped into injected pods (``aegis.io/injected-by``)."""
    from importlib import metadata  # ~20 ms: not on the `aegis probe` path

    try:
        return metadata.version("aegis-llm")
    except metadata.PackageNotFoundError:  # running from a source tree without install
        return "0.0.0+unknown"


def parse_duration(text: str) -> timedelta:
    """``90d``, ``12h``, ``15m``, ``30s`` or a sum such as ``1h30m``."""
    parts = re.findall(r"(\d+(?:\.\d+)?)([dhms])", text.strip())
    if not parts or "".join(n + u for n, u in parts) != text.strip():
        raise argparse.ArgumentTypeError(f"invalid duration {text!r} (examples: 90d, 12h, 30s)")
    seconds = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}
    return timedelta(seconds=sum(float(n) * seconds[u] for n, u in parts))


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object")
    return value


@dataclass(frozen=True)
class SidecarSettings:
    """What goes into every injected pod (the chart's ``sidecar.*`` values)."""

    image: str = field(default_factory=lambda: f"{DEFAULT_IMAGE}:{injector_version()}")
    image_pull_policy: str = "IfNotPresent"
    resources: Mapping[str, Any] = field(default_factory=lambda: dict(DEFAULT_RESOURCES))
    port: int = 8787
    metrics_port: int = 9787
    metrics_host: str = "127.0.0.1"
    """Where the sidecar's metrics listen: the pod's loopback unless Prometheus must
    scrape them (the chart then sets 0.0.0.0 and ships a NetworkPolicy)."""
    container_name: str = "aegis-sidecar"
    ledger_secret_name: str | None = "aegis-ledger"
    """Secret (in the pod's namespace: secretKeyRef cannot cross namespaces) holding the
    ledger DSN; ``None`` leaves the DSN out and the sidecar uses its config's URL."""
    ledger_secret_key: str = "dsn"
    native: NativeMode = "auto"
    run_as_user: int = 65532
    data_size_limit: str = "64Mi"
    otel_env: Mapping[str, str] = field(default_factory=dict)
    """``OTEL_*`` variables for every sidecar (the chart's ``tracing`` values): the
    standard OpenTelemetry settings; empty leaves the sidecars' traces off."""

    @property
    def aegis_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def openai_base_url(self) -> str:
        return f"{self.aegis_url}/v1"


@dataclass(frozen=True)
class ServerSettings:
    """How the webhook server itself runs (listen address, TLS, API access)."""

    listen_host: str = "0.0.0.0"
    port: int = 8443
    metrics_port: int = 9788
    namespace: str = "aegis-system"
    """The namespace the injector (and operator) run in: never injected."""
    kubeconfig: str | None = None
    tls_mode: TlsMode = "secret"
    cert_dir: Path | None = None
    tls_secret: str = "aegis-injector-tls"
    service_name: str = "aegis-injector"
    extra_sans: tuple[str, ...] = ()
    webhook_config: str | None = "aegis-injector"
    """MutatingWebhookConfiguration whose caBundle this injector keeps current
    (empty in cert-manager mode: its CA injector does that)."""
    leaf_validity: timedelta = timedelta(days=90)
    leaf_renew_before: timedelta = timedelta(days=30)
    ca_validity: timedelta = timedelta(days=5 * 365)
    ca_renew_before: timedelta = timedelta(days=365)
    ca_propagation: timedelta = timedelta(minutes=10)
    tls_check_interval: float = 60.0
    protected_namespaces: tuple[str, ...] = ("kube-system",)
    shutdown_delay: float = 3.0
    """Seconds between SIGTERM and closing: the Service's endpoints catch up meanwhile."""

    @property
    def dns_names(self) -> tuple[str, ...]:
        """Every name the API server may use for the webhook Service, plus extras."""
        svc, ns = self.service_name, self.namespace
        names = (svc, f"{svc}.{ns}", f"{svc}.{ns}.svc", f"{svc}.{ns}.svc.cluster.local")
        return names + tuple(s for s in self.extra_sans if s not in names)

    @property
    def never_injected(self) -> frozenset[str]:
        return frozenset((*self.protected_namespaces, self.namespace))


@dataclass(frozen=True)
class InjectorSettings:
    server: ServerSettings
    sidecar: SidecarSettings


_DURATION_HELP = {
    "leaf-validity": "lifetime of a serving certificate (secret mode)",
    "leaf-renew-before": "reissue the serving certificate when less than this is left",
    "ca-validity": "lifetime of a CA (secret mode)",
    "ca-renew-before": "start a new CA when less than this is left",
    "ca-propagation": "a new CA is trusted (in caBundle) this long before it signs",
}


def _env(name: str, default: Any) -> Any:
    return os.environ.get(ENV_PREFIX + name.upper().replace("-", "_"), default)


def _port(text: str) -> int:
    """A port number; says so when the value is a Kubernetes service-link variable."""
    try:
        return int(text)
    except ValueError:
        if text.startswith(("tcp://", "udp://")):
            raise argparse.ArgumentTypeError(
                f"{text!r} is a service-link variable the kubelet set for a Service named "
                "like the injector: set enableServiceLinks: false in the pod, or pass --port"
            ) from None
        raise argparse.ArgumentTypeError(f"invalid port {text!r}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``aegis injector`` flags (each also read from ``AEGIS_INJECTOR_<FLAG>``)."""
    s, c = ServerSettings, SidecarSettings  # class-level defaults: no version lookup here
    listen = parser.add_argument_group("webhook server")
    listen.add_argument(
        "--listen-host", default=_env("listen-host", s.listen_host), help="address of both ports"
    )
    listen.add_argument("--port", type=_port, default=_env("port", s.port), help="HTTPS port")
    listen.add_argument(
        "--metrics-port",
        type=int,
        default=_env("metrics-port", s.metrics_port),
        help="plain HTTP: /metrics, /healthz, /readyz (0 disables)",
    )
    listen.add_argument(
        "--namespace",
        default=_env("namespace", os.environ.get("POD_NAMESPACE", s.namespace)),
        help="namespace of the injector/operator (never injected; holds the TLS Secret)",
    )
    listen.add_argument(
        "--protected-namespace",
        action="append",
        default=None,
        help="never inject here (repeatable; default kube-system, plus --namespace)",
    )
    listen.add_argument(
        "--kubeconfig",
        default=_env("kubeconfig", os.environ.get("KUBECONFIG")),
        help="credentials when not running in a pod (in-cluster service account otherwise)",
    )
    listen.add_argument(
        "--shutdown-delay",
        type=float,
        default=_env("shutdown-delay", s.shutdown_delay),
        help="seconds to keep answering after SIGTERM (not ready meanwhile)",
    )
    listen.add_argument(
        "--print-manifests",
        action="store_true",
        help="print the MutatingWebhookConfiguration and RBAC for these settings, then exit",
    )

    tls = parser.add_argument_group("certificates")
    tls.add_argument(
        "--tls-mode",
        choices=("secret", "files"),
        default=_env("tls-mode", s.tls_mode),
        help="secret: CA + certificate made here and shared by replicas through a Secret, "
        "caBundle kept current; files: tls.crt/tls.key in --cert-dir (cert-manager)",
    )
    tls.add_argument(
        "--cert-dir",
        type=Path,
        default=_env("cert-dir", None),
        help="files mode: directory with tls.crt and tls.key, re-read when they change",
    )
    tls.add_argument(
        "--tls-secret",
        default=_env("tls-secret", s.tls_secret),
        help="secret mode: Secret in --namespace holding the CA and certificate",
    )
    tls.add_argument(
        "--service-name",
        default=_env("service-name", s.service_name),
        help="Service in front of the injector: its DNS names go into the certificate",
    )
    tls.add_argument(
        "--extra-san",
        action="append",
        default=[x for x in _env("extra-sans", "").split(",") if x],
        help="extra DNS name or IP in the serving certificate (repeatable)",
    )
    tls.add_argument(
        "--webhook-config",
        default=_env("webhook-config", s.webhook_config),
        help="MutatingWebhookConfiguration whose caBundle to keep current ('' = none)",
    )
    for name, default in (
        ("leaf-validity", "90d"),
        ("leaf-renew-before", "30d"),
        ("ca-validity", "1825d"),
        ("ca-renew-before", "365d"),
        ("ca-propagation", "10m"),
    ):
        tls.add_argument(
            f"--{name}",
            type=parse_duration,
            default=_env(name, default),
            help=_DURATION_HELP[name],
        )
    tls.add_argument(
        "--tls-check-interval",
        type=float,
        default=_env("tls-check-interval", s.tls_check_interval),
        help="seconds between certificate / caBundle checks",
    )

    side = parser.add_argument_group("injected sidecar")
    side.add_argument(
        "--image",
        default=_env("image", None),
        help=f"sidecar image (default {DEFAULT_IMAGE}:<injector version>)",
    )
    side.add_argument(
        "--image-pull-policy",
        choices=("Always", "IfNotPresent", "Never"),
        default=_env("image-pull-policy", c.image_pull_policy),
        help="sidecar imagePullPolicy",
    )
    side.add_argument(
        "--sidecar-resources",
        type=_json_object,
        default=_env("sidecar-resources", json.dumps(dict(DEFAULT_RESOURCES))),
        help="container resources as JSON",
    )
    side.add_argument(
        "--sidecar-port",
        type=int,
        default=_env("sidecar-port", c.port),
        help="sidecar API port on 127.0.0.1 (OPENAI_BASE_URL, AEGIS_URL, probes)",
    )
    side.add_argument(
        "--sidecar-metrics-port",
        type=int,
        default=_env("sidecar-metrics-port", c.metrics_port),
        help="sidecar metrics port (0: any free port)",
    )
    side.add_argument(
        "--sidecar-metrics-host",
        default=_env("sidecar-metrics-host", c.metrics_host),
        help="sidecar metrics address: 127.0.0.1 (default: only the pod itself), or "
        "0.0.0.0 for Prometheus (fence it with a NetworkPolicy)",
    )
    side.add_argument(
        "--ledger-secret",
        default=_env("ledger-secret", c.ledger_secret_name),
        help="Secret in each app namespace holding the ledger DSN ('' = none)",
    )
    side.add_argument(
        "--ledger-secret-key",
        default=_env("ledger-secret-key", c.ledger_secret_key),
        help="key of the ledger DSN in that Secret",
    )
    side.add_argument(
        "--native-sidecar",
        choices=("auto", "always", "never"),
        default=_env("native-sidecar", c.native),
        help="auto: native sidecar when the API server is >= 1.29",
    )
    side.add_argument(
        "--sidecar-otel-env",
        default=_env("sidecar-otel-env", "{}"),
        help="JSON object of OTEL_* variables for the sidecars, e.g. "
        '{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"} (default: traces off)',
    )
    side.add_argument(
        "--sidecar-run-as-user",
        type=int,
        default=_env("sidecar-run-as-user", c.run_as_user),
        help="numeric UID (and GID) of the sidecar: runAsNonRoot needs a number",
    )


def otel_env(value: str | Mapping[str, Any]) -> dict[str, str]:
    """The sidecars' ``OTEL_*`` variables from a JSON object; anything else is refused."""
    parsed = _json_object(value) if isinstance(value, str) else dict(value)
    bad = sorted(str(k) for k in parsed if not str(k).startswith("OTEL_"))
    if bad:
        raise ValueError(f"--sidecar-otel-env takes OTEL_* variables only, not {', '.join(bad)}")
    return {str(k): str(v) for k, v in parsed.items() if v is not None and str(v) != ""}


def from_args(args: argparse.Namespace) -> InjectorSettings:
    """Settings from parsed ``aegis injector`` arguments (string defaults converted)."""

    def duration(value: timedelta | str) -> timedelta:
        return value if isinstance(value, timedelta) else parse_duration(value)

    resources = args.sidecar_resources
    if isinstance(resources, str):
        resources = _json_object(resources)
    protected = tuple(args.protected_namespace or ("kube-system",))
    server = ServerSettings(
        listen_host=args.listen_host,
        port=args.port,
        metrics_port=args.metrics_port,
        namespace=args.namespace,
        kubeconfig=args.kubeconfig or None,
        tls_mode=args.tls_mode,
        cert_dir=Path(args.cert_dir) if args.cert_dir else None,
        tls_secret=args.tls_secret,
        service_name=args.service_name,
        extra_sans=tuple(args.extra_san),
        webhook_config=args.webhook_config or None,
        leaf_validity=duration(args.leaf_validity),
        leaf_renew_before=duration(args.leaf_renew_before),
        ca_validity=duration(args.ca_validity),
        ca_renew_before=duration(args.ca_renew_before),
        ca_propagation=duration(args.ca_propagation),
        tls_check_interval=args.tls_check_interval,
        protected_namespaces=protected,
        shutdown_delay=args.shutdown_delay,
    )
    sidecar = SidecarSettings(
        image=args.image or f"{DEFAULT_IMAGE}:{injector_version()}",
        image_pull_policy=args.image_pull_policy,
        resources=resources,
        port=args.sidecar_port,
        metrics_port=args.sidecar_metrics_port,
        metrics_host=args.sidecar_metrics_host,
        ledger_secret_name=args.ledger_secret or None,
        ledger_secret_key=args.ledger_secret_key,
        native=args.native_sidecar,
        run_as_user=args.sidecar_run_as_user,
        otel_env=otel_env(args.sidecar_otel_env),
    )
    if server.tls_mode == "files" and server.cert_dir is None:
        raise ValueError("--tls-mode files needs --cert-dir (holding tls.crt and tls.key)")
    return InjectorSettings(server=server, sidecar=sidecar)


def native_sidecar_supported(mode: NativeMode, server_version: Mapping[str, Any]) -> bool:
    """Whether to inject a native sidecar, from the API server's ``/version`` answer."""
    if mode != "auto":
        return mode == "always"
    major = re.match(r"\d+", str(server_version.get("major", "")))
    minor = re.match(r"\d+", str(server_version.get("minor", "")))  # "29+" on some clouds
    if not major or not minor:
        return False
    return (int(major.group()), int(minor.group())) >= (1, NATIVE_SIDECAR_MIN_MINOR)
