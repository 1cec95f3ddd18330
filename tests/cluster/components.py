"""How each server of the cluster is started, and when it counts as up.

Order: etcd, kube-apiserver, kube-controller-manager, kube-scheduler, containerd,
kubelet, kube-proxy. Servers the host must reach listen on the node IP (the API
server, the kubelet, the health ports); etcd and containerd's streaming server stay on
the namespace's loopback. Readiness is polled, never slept for.
"""

from __future__ import annotations

import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.controlplane.build import Testbin

from .certs import ClusterPki
from .holder import Holder
from .hostnet import in_netns
from .layout import Layout
from .shell import ClusterError, ok

ETCD_URL = "http://127.0.0.1:2379"


@dataclass(frozen=True)
class Server:
    """One server: its command line and the check that says it is up."""

    name: str
    argv: list[str]
    ready: Callable[[Holder], bool]  # gets the holder, to look inside the cluster
    timeout: float = 120.0


def https_ok(url: str, pki: ClusterPki, *, client: bool = True) -> bool:
    """GET `url` from the host, verifying the cluster CA (admin credentials if `client`)."""
    context = ssl.create_default_context(cafile=str(pki.crt("ca")))
    if client:
        context.load_cert_chain(pki.crt("admin-client"), pki.key("admin-client"))
    try:
        with urllib.request.urlopen(url, timeout=5, context=context) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError, ssl.SSLError):
        return False


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def http_ok_in_netns(layout: Layout, url: str) -> bool:
    """GET `url` from inside the cluster's network namespace (its loopback)."""
    code = f"import urllib.request; urllib.request.urlopen({url!r}, timeout=5)"
    return ok(in_netns(layout, [sys.executable, "-c", code]), timeout=20)


def servers(
    layout: Layout, pki: ClusterPki, testbin: Testbin, files: dict[str, Path]
) -> list[Server]:
    """Every server, in start order."""
    ip = layout.node_ip
    etcd_peer = "http://127.0.0.1:2380"
    component_tls = {
        name: [
            f"--tls-cert-file={pki.crt(f'{name}-serving')}",
            f"--tls-private-key-file={pki.key(f'{name}-serving')}",
        ]
        for name in ("kube-controller-manager", "kube-scheduler")
    }

    def kubeconfig_flags(user: str) -> list[str]:
        path = pki.kubeconfig(user)
        return [
            f"--kubeconfig={path}",
            f"--authentication-kubeconfig={path}",
            f"--authorization-kubeconfig={path}",
        ]

    return [
        Server(
            "etcd",
            [
                str(testbin.etcd),
                f"--data-dir={layout.etcd_data}",
                f"--listen-client-urls={ETCD_URL}",
                f"--advertise-client-urls={ETCD_URL}",
                f"--listen-peer-urls={etcd_peer}",
                f"--initial-advertise-peer-urls={etcd_peer}",
                f"--initial-cluster=default={etcd_peer}",
                "--unsafe-no-fsync",  # the data dies with the cluster
                "--log-level=warn",
            ],
            lambda _holder: http_ok_in_netns(layout, f"{ETCD_URL}/health"),
        ),
        Server(
            "kube-apiserver",
            [
                str(testbin.kube_apiserver),
                f"--etcd-servers={ETCD_URL}",
                "--bind-address=0.0.0.0",
                f"--advertise-address={ip}",
                f"--secure-port={layout.api_port}",
                f"--cert-dir={layout.dir / 'apiserver-certs'}",
                f"--tls-cert-file={pki.crt('apiserver')}",
                f"--tls-private-key-file={pki.key('apiserver')}",
                f"--client-ca-file={pki.crt('ca')}",
                f"--kubelet-client-certificate={pki.crt('apiserver-kubelet-client')}",
                f"--kubelet-client-key={pki.key('apiserver-kubelet-client')}",
                f"--kubelet-certificate-authority={pki.crt('ca')}",
                "--kubelet-preferred-address-types=InternalIP",
                f"--service-cluster-ip-range={layout.service_cidr}",
                f"--service-account-issuer=https://kubernetes.default.svc.{layout.cluster_domain}",
                f"--service-account-key-file={pki.crt('sa')}",
                f"--service-account-signing-key-file={pki.key('sa')}",
                "--authorization-mode=Node,RBAC",
                "--enable-admission-plugins=NodeRestriction",
                "--allow-privileged=true",
                "--profiling=false",
            ],
            lambda _holder: https_ok(f"{layout.server}/readyz", pki),
        ),
        Server(
            "kube-controller-manager",
            [
                str(testbin.binary("kube-controller-manager")),
                *kubeconfig_flags("kube-controller-manager"),
                f"--bind-address={ip}",
                *component_tls["kube-controller-manager"],
                f"--client-ca-file={pki.crt('ca')}",
                f"--service-account-private-key-file={pki.key('sa')}",
                f"--root-ca-file={pki.crt('ca')}",
                f"--cluster-signing-cert-file={pki.crt('ca')}",
                f"--cluster-signing-key-file={pki.key('ca')}",
                f"--cluster-name={layout.name}",
                "--use-service-account-credentials=true",
                "--allocate-node-cidrs=false",
                "--leader-elect=false",
                "--profiling=false",
            ],
            lambda _holder: https_ok(f"https://{ip}:10257/healthz", pki, client=False),
        ),
        Server(
            "kube-scheduler",
            [
                str(testbin.binary("kube-scheduler")),
                *kubeconfig_flags("kube-scheduler"),
                f"--bind-address={ip}",
                *component_tls["kube-scheduler"],
                f"--client-ca-file={pki.crt('ca')}",
                "--leader-elect=false",
                "--profiling=false",
            ],
            lambda _holder: https_ok(f"https://{ip}:10259/healthz", pki, client=False),
        ),
        Server(
            "containerd",
            ["containerd", f"--config={files['containerd']}", "--log-level=warn"],
            lambda holder: containerd_ready(holder, layout),
        ),
        Server(
            "kubelet",
            [
                str(testbin.binary("kubelet")),
                f"--config={files['kubelet']}",
                f"--kubeconfig={pki.kubeconfig('kubelet')}",
                f"--root-dir={layout.kubelet_root}",
                f"--node-ip={ip}",
                f"--hostname-override={layout.node_name}",
                "--v=1",
            ],
            lambda _holder: http_ok(f"http://{ip}:10248/healthz"),
        ),
        Server(
            "kube-proxy",
            [str(testbin.binary("kube-proxy")), f"--config={files['kube-proxy']}", "--v=1"],
            lambda _holder: http_ok(f"http://{ip}:10256/healthz"),
        ),
    ]


def containerd_ready(holder: Holder, layout: Layout) -> bool:
    return ok(holder.exec_argv(["ctr", f"--address={layout.containerd_socket}", "version"]))


def wait_up(server: Server, proc: subprocess.Popen[bytes], log_path: Path, holder: Holder) -> None:
    """Poll `server.ready` until it holds; fail early, with the log, when it exits."""
    deadline = time.monotonic() + server.timeout
    while not server.ready(holder):
        if proc.poll() is not None:
            raise ClusterError(
                f"{server.name} exited with {proc.returncode}; log {log_path}:\n{tail(log_path)}"
            )
        if time.monotonic() > deadline:
            raise ClusterError(
                f"{server.name} not up after {server.timeout:.0f}s; "
                f"log {log_path}:\n{tail(log_path)}"
            )
        time.sleep(0.25)  # poll for readiness under the deadline above


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no log at {path})"
