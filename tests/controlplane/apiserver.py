"""etcd + kube-apiserver on random loopback ports: a real Kubernetes API, envtest style.

There is no kubelet, scheduler or controller-manager: pods stay Pending, namespaces
are never finalised and nothing is garbage-collected. Everything the API server does
itself is real: CRD schemas and CEL rules, RBAC, admission webhooks, TokenRequest.

Flags follow controller-runtime's envtest: RBAC authorization, the ServiceAccount
admission plugin disabled (no token controller to create the default account),
service-account issuer/keys for TokenRequest, privileged pods allowed.
"""

from __future__ import annotations

import base64
import json
import shutil
import ssl
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.controlplane.build import Testbin
from tests.controlplane.pki import CertificateAuthority, KeyPair, service_account_keys
from tests.controlplane.procs import PortTaken, ServerProcess, start_on_free_ports

SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"
# The first IP of the service range is the `kubernetes` service; it needs a SAN too.
_SERVICE_IP = "10.0.0.1"


class ControlPlaneError(RuntimeError):
    """etcd or kube-apiserver did not come up; the message has the log tails."""


class ControlPlane:
    """Owns the PKI, the two processes and the admin kubeconfig under `workdir`."""

    def __init__(self, testbin: Testbin, workdir: Path) -> None:
        self.testbin = testbin
        self.workdir = workdir
        self.pki_dir = workdir / "pki"
        self.kubeconfig = workdir / "kubeconfig"
        self.ca = CertificateAuthority.create("aegis-test-ca")
        self.ca_cert_path, self.ca_key_path = self._write_pki()
        # etcd's WAL preallocates 64 MiB; keep it out of pytest's retained tmp dirs.
        self._etcd_data = Path(tempfile.mkdtemp(prefix="aegis-etcd-"))
        self.etcd_port = 0
        self.port = 0
        self.etcd: ServerProcess | None = None
        self.apiserver: ServerProcess | None = None

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def _write_pki(self) -> tuple[Path, Path]:
        ca_paths = self.ca.write(self.pki_dir, "ca")
        self.ca.serving_cert(
            "127.0.0.1",
            "localhost",
            _SERVICE_IP,
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ).write(self.pki_dir, "apiserver")
        self.admin = self.ca.issue("admin", organizations=["system:masters"], client=True)
        self.admin_cert_path, self.admin_key_path = self.admin.write(self.pki_dir, "admin")
        sa_private, sa_public = service_account_keys()
        KeyPair(sa_public, sa_private).write(self.pki_dir, "sa")  # sa.crt holds the public key
        return ca_paths

    # -- lifecycle ----------------------------------------------------------------
    def start(self, timeout: float = 90.0) -> None:
        """Start etcd then kube-apiserver, each on free ports, and again on other ports
        when one was taken before the server bound it."""
        try:
            self.etcd, (self.etcd_port, _) = start_on_free_ports(
                self._launch_etcd, 2, self._etcd_ready, timeout=timeout, what="etcd's /health"
            )
            self.apiserver, (self.port,) = start_on_free_ports(
                self._launch_apiserver,
                1,
                self._apiserver_ready,
                timeout=timeout,
                what="kube-apiserver's /readyz and the default namespace",
            )
        except (TimeoutError, AssertionError, PortTaken) as error:
            self.stop()
            logs = "\n".join(p.describe_exit() for p in (self.etcd, self.apiserver) if p)
            raise ControlPlaneError(f"{error}\n{logs}") from None
        except BaseException:
            self.stop()
            raise
        self._write_kubeconfig()

    def _launch_etcd(self, ports: list[int]) -> ServerProcess:
        client_url, peer_url = (f"http://127.0.0.1:{port}" for port in ports)
        shutil.rmtree(self._etcd_data, ignore_errors=True)
        self.etcd = ServerProcess(
            "etcd",
            [
                str(self.testbin.etcd),
                f"--data-dir={self._etcd_data}",
                f"--listen-client-urls={client_url}",
                f"--advertise-client-urls={client_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=default={peer_url}",
                "--unsafe-no-fsync",  # the data dies with the session
                "--log-level=warn",
            ],
            self.workdir / "etcd.log",
        )
        self.etcd.start()
        return self.etcd

    def _etcd_ready(self, ports: list[int]) -> bool:
        return _http_ok(f"http://127.0.0.1:{ports[0]}/health", None)

    def _launch_apiserver(self, ports: list[int]) -> ServerProcess:
        (self.port,) = ports
        pki = self.pki_dir
        self.apiserver = ServerProcess(
            "kube-apiserver",
            [
                str(self.testbin.kube_apiserver),
                f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={self.port}",
                f"--cert-dir={self.workdir / 'apiserver-certs'}",
                f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={self.ca_cert_path}",
                f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                f"--service-account-issuer={self.server}",
                f"--service-account-key-file={pki / 'sa.crt'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                "--authorization-mode=RBAC",
                "--disable-admission-plugins=ServiceAccount",
                "--allow-privileged=true",
                # A loopback advertise address cannot back the `kubernetes` Endpoints.
                "--endpoint-reconciler-type=none",
                "--profiling=false",
            ],
            self.workdir / "kube-apiserver.log",
        )
        self.apiserver.start()
        return self.apiserver

    def _apiserver_ready(self, ports: list[int]) -> bool:
        # The system-namespaces controller creates `default` just after /readyz turns green.
        context = self.admin_ssl_context()
        server = f"https://127.0.0.1:{ports[0]}"
        return _http_ok(f"{server}/readyz", context) and _http_ok(
            f"{server}/api/v1/namespaces/default", context
        )

    def stop(self) -> None:
        """Stop kube-apiserver, then etcd, and delete etcd's data."""
        for proc in (self.apiserver, self.etcd):
            if proc:
                proc.stop(timeout=15)
        shutil.rmtree(self._etcd_data, ignore_errors=True)

    # -- clients -------------------------------------------------------------------
    def admin_ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca_cert_path))
        context.load_cert_chain(self.admin_cert_path, self.admin_key_path)
        return context

    def get(self, path: str) -> Any:
        """GET `path` as the admin user and decode the JSON body."""
        request = urllib.request.Request(f"{self.server}{path}")
        with urllib.request.urlopen(request, timeout=10, context=self.admin_ssl_context()) as r:
            return json.loads(r.read())

    def _write_kubeconfig(self) -> None:
        """Admin kubeconfig with the credentials embedded, so it is one self-contained file."""

        def b64(data: bytes) -> str:
            return base64.b64encode(data).decode()

        cluster = {"server": self.server, "certificate-authority-data": b64(self.ca.cert_pem)}
        user = {
            "client-certificate-data": b64(self.admin.cert_pem),
            "client-key-data": b64(self.admin.key_pem),
        }
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "aegis-test", "cluster": cluster}],
            "users": [{"name": "admin", "user": user}],
            "contexts": [
                {"name": "aegis-test", "context": {"cluster": "aegis-test", "user": "admin"}}
            ],
            "current-context": "aegis-test",
        }
        self.kubeconfig.touch(mode=0o600)
        self.kubeconfig.write_text(json.dumps(config, indent=2) + "\n")


def _http_ok(url: str, context: ssl.SSLContext | None) -> bool:
    """True when GET ``url`` answers 200 (as the admin, with ``context``)."""
    try:
        with urllib.request.urlopen(url, timeout=5, context=context) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False
