"""A real ``aegis injector`` process wired into the real kube-apiserver of the test bed.

Each injector runs as its own subprocess with the ServiceAccount token of the RBAC
that :func:`manifests.rbac` renders (so the tests also prove those rules suffice),
creates its CA and certificate in a Secret, and patches the ``caBundle`` of the
MutatingWebhookConfiguration that :func:`manifests.webhook_configuration` renders
(``url: https://127.0.0.1:<port>`` instead of a Service). The configuration gets one
extra namespace requirement, a per-injector label, so it only ever sees the
namespaces of these tests, never those of other tests in the session.
"""

from __future__ import annotations

import base64
import json
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from aegis.operator.api.naming import INJECT_LABEL, INJECTED_ANNOTATION
from aegis.operator.injector import manifests
from tests.controlplane.kube import Kube
from tests.controlplane.procs import ServerProcess, free_ports, start_on_free_ports
from tests.operator.harness import remove_aegis_objects

ROOT = Path(__file__).resolve().parents[2]
AEGIS = str(Path(sys.executable).parent / "aegis")
SCOPE_LABEL = "test.aegis.io/injector"
CRDS = sorted((ROOT / "crds").glob("*.yaml"))


def install_crds(kube: Kube) -> None:
    """Apply every real CRD from ``crds/`` (idempotent: whichever package comes first;
    all of them, since the shared cleanup lists every kind)."""
    names = [f"crd/{path.name.removesuffix('.yaml')}" for path in CRDS]
    kube.kubectl("apply", *(arg for path in CRDS for arg in ("-f", str(path))))
    kube.kubectl("wait", "--for=condition=Established", "--timeout=60s", *names)


def token_kubeconfig(kube: Kube, namespace: str, service_account: str, path: Path) -> Path:
    """A kubeconfig authenticating as a ServiceAccount (a bound token, 1 h)."""
    token = kube.kubectl(
        "create", "token", service_account, "-n", namespace, "--duration=1h"
    ).stdout.strip()
    server = kube.kubectl_json("config", "view", "--minify")["clusters"][0]["cluster"]["server"]
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "test",
                "cluster": {
                    "server": server,
                    "certificate-authority-data": base64.b64encode(kube.server_ca_pem).decode(),
                },
            }
        ],
        "users": [{"name": service_account, "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "test", "user": service_account}}],
        "current-context": "sa",
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


def http_get(url: str, timeout: float = 2.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()
    except OSError:
        return 0, ""


@dataclass
class Injector:
    """One running injector and its webhook configuration."""

    kube: Kube
    name: str
    namespace: str
    service_account: str
    port: int
    metrics_port: int
    sidecar_port: int
    process: ServerProcess
    extra_args: list[str] = field(default_factory=list)
    configure: Callable[[int], None] | None = None  # points the webhook at a new port

    @property
    def url(self) -> str:
        return f"https://{self.kube.webhook_host}:{self.port}"

    def scope(self, namespace: str, *, inject: str | None = None) -> None:
        """Let this injector's webhook see ``namespace`` (and opt it in with ``inject``)."""
        labels = [f"{SCOPE_LABEL}={self.name}"]
        if inject is not None:
            labels.append(f"{INJECT_LABEL}={inject}")
        self.kube.kubectl("label", "namespace", namespace, "--overwrite", *labels)

    def metrics(self) -> str:
        status, text = http_get(f"http://127.0.0.1:{self.metrics_port}/metrics")
        assert status == 200
        return text

    def ready(self) -> bool:
        return http_get(f"http://127.0.0.1:{self.metrics_port}/readyz")[0] == 200

    def start(self) -> None:
        """Start and wait until ready; when a port was taken since it was chosen, again
        on other ports (and the webhook configuration follows the new one)."""
        first = True

        def launch(ports: list[int]) -> ServerProcess:
            nonlocal first
            if not first:  # the ports chosen first are already in argv and the config
                self._move(*ports)
            first = False
            self.process.start()
            return self.process

        start_on_free_ports(
            launch,
            2,
            lambda _: self.ready(),
            timeout=60,
            what=f"injector {self.name} ready",
        )

    def _move(self, port: int, metrics_port: int) -> None:
        argv = self.process.argv
        argv[argv.index("--port") + 1] = str(port)
        argv[argv.index("--metrics-port") + 1] = str(metrics_port)
        self.port, self.metrics_port = port, metrics_port
        if self.configure is not None:
            self.configure(port)

    def stop(self) -> None:
        self.process.stop()

    def use_sidecar_port(self, port: int) -> None:
        """Restart with ``--sidecar-port port``: the pods injected from now on run their
        sidecar (and point their app) there."""
        argv = self.process.argv
        self.stop()
        argv[argv.index("--sidecar-port") + 1] = str(port)
        self.sidecar_port = port
        self.start()

    def replica(self, workdir: Path) -> Injector:
        """Another process with the same settings (namespace, Secret, webhook), new ports."""
        port, metrics_port = free_ports(2)
        argv = list(self.process.argv)
        argv[argv.index("--port") + 1] = str(port)
        argv[argv.index("--metrics-port") + 1] = str(metrics_port)
        name = f"{self.name}-replica-{uuid.uuid4().hex[:4]}"
        process = ServerProcess(name, argv, workdir / f"{name}.log", env=self.process.env)
        return Injector(
            self.kube, self.name, self.namespace, self.service_account, port, metrics_port,
            self.sidecar_port, process, self.extra_args,
        )  # fmt: skip

    def wait_effective(self, namespace: str, pod: dict[str, Any]) -> None:
        """Poll with server-side dry runs until the API server calls this webhook.

        The configuration and its caBundle reach the API server's admission plugin
        asynchronously; "effective" means a dry-run of an opted-in pod was injected
        or refused by the injector itself (not a TLS or connection failure).
        """
        deadline = time.monotonic() + 60
        while True:
            done = self.kube.kubectl(
                "create", "-n", namespace, "--dry-run=server", "-o", "json", "-f", "-",
                input=json.dumps(pod), check=False,
            )  # fmt: skip
            if done.returncode == 0:
                annotations = json.loads(done.stdout)["metadata"].get("annotations") or {}
                if INJECTED_ANNOTATION in annotations:
                    return
            elif "Aegis sidecar injection refused" in done.stderr:
                return
            assert time.monotonic() < deadline, (
                f"webhook never took effect: {done.stderr}\n{self.process.log_tail()}"
            )
            time.sleep(0.3)  # poll interval; the deadline is asserted above


@contextmanager
def start_injector(
    kube: Kube, workdir: Path, *extra_args: str, start: bool = True
) -> Iterator[Injector]:
    """Namespace, RBAC, webhook configuration and process of one injector; removed after."""
    name = f"aegis-test-{uuid.uuid4().hex[:8]}"
    namespace = kube.create_namespace("aegis-inj")
    service_account = name
    objects = manifests.rbac(
        namespace=namespace,
        service_account=service_account,
        webhook_config=name,
        tls_secret="aegis-injector-tls",
    )
    for obj in objects:
        kube.apply(obj)
    port, metrics_port, sidecar_port = free_ports(3)

    def configure(port: int) -> None:
        config = manifests.webhook_configuration(
            name=name,
            namespace=namespace,
            url=f"https://{kube.webhook_host}:{port}",
            extra_namespace_expressions=[{"key": SCOPE_LABEL, "operator": "In", "values": [name]}],
        )
        kube.apply(config)

    configure(port)
    kubeconfig = token_kubeconfig(kube, namespace, service_account, workdir / f"{name}.kubeconfig")
    listen = "127.0.0.1" if kube.webhook_host == "127.0.0.1" else "0.0.0.0"
    argv = [
        AEGIS, "injector",
        "--kubeconfig", str(kubeconfig),
        "--namespace", namespace,
        "--listen-host", listen,
        "--port", str(port),
        "--metrics-port", str(metrics_port),
        "--extra-san", kube.webhook_host,
        "--webhook-config", name,
        "--tls-check-interval", "1",
        "--shutdown-delay", "0",
        "--image", "registry.invalid/aegis:test",
        "--sidecar-port", str(sidecar_port),
        "--sidecar-metrics-port", "0",
        *extra_args,
    ]  # fmt: skip
    process = ServerProcess(
        name, argv, workdir / f"{name}.log", env={**kube.env, "AEGIS_LOG_FORMAT": "text"}
    )
    injector = Injector(
        kube, name, namespace, service_account, port, metrics_port, sidecar_port, process,
        list(extra_args), configure,
    )  # fmt: skip
    try:
        if start:
            injector.start()
        yield injector
    finally:
        injector.stop()
        kube.kubectl("delete", "mutatingwebhookconfiguration", name, "--ignore-not-found")
        for kind in ("clusterrolebinding", "clusterrole"):
            kube.kubectl("delete", kind, service_account, "--ignore-not-found")
        kube.delete_namespace(namespace)


@pytest.fixture(scope="package")
def crds(kube: Kube) -> Iterator[None]:
    """The real CRDs for this package; the LLMRoutes it left are removed afterwards
    (the CRDs stay: no later package relies on this one's cleanup)."""
    install_crds(kube)
    yield
    remove_aegis_objects(kube)


@pytest.fixture(scope="module")
def injector(
    kube: Kube, crds: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Injector]:
    """One injector shared by a test module."""
    with start_injector(kube, tmp_path_factory.mktemp("injector")) as running:
        yield running
