"""The cluster's PKI: one CA, serving and client certificates, and kubeconfigs.

Identities follow kubeadm's, so the API server's bootstrap RBAC roles apply unchanged:
``system:kube-controller-manager``, ``system:kube-scheduler``, ``system:kube-proxy``,
``system:node:<node>`` in ``system:nodes`` (Node authorizer + NodeRestriction) and an
admin in ``system:masters``. The CA also signs the kubelet's serving certificate, so
the API server verifies the kubelet (logs, exec) with it.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path

from tests.controlplane.pki import CertificateAuthority, KeyPair, service_account_keys

from .layout import Layout


@dataclass(frozen=True)
class ClusterPki:
    """Paths of the files :func:`create` writes under ``layout.pki``."""

    dir: Path

    def crt(self, stem: str) -> Path:
        return self.dir / f"{stem}.crt"

    def key(self, stem: str) -> Path:
        return self.dir / f"{stem}.key"

    def kubeconfig(self, user: str) -> Path:
        return self.dir / f"{user}.kubeconfig"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def kubeconfig_text(server: str, ca_pem: bytes, pair: KeyPair, user: str) -> str:
    """A self-contained kubeconfig (credentials embedded) for `user`."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "aegis",
                "cluster": {"server": server, "certificate-authority-data": _b64(ca_pem)},
            }
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate-data": _b64(pair.cert_pem),
                    "client-key-data": _b64(pair.key_pem),
                },
            }
        ],
        "contexts": [{"name": "aegis", "context": {"cluster": "aegis", "user": user}}],
        "current-context": "aegis",
    }
    return json.dumps(config, indent=2) + "\n"


def _write_private(path: Path, text: str) -> None:
    path.touch(mode=0o600)
    path.write_text(text)


def create(layout: Layout) -> ClusterPki:
    """Write the CA, every certificate and key, the SA key pair and the kubeconfigs."""
    pki = ClusterPki(layout.pki)
    ca = CertificateAuthority.create(f"{layout.name}-cluster-ca")
    ca.write(pki.dir, "ca")
    api_names = [
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        f"kubernetes.default.svc.{layout.cluster_domain}",
        "localhost",
    ]
    ca.issue(
        "kube-apiserver",
        ip_addresses=[layout.node_ip, layout.api_service_ip, "127.0.0.1"],
        dns_names=api_names,
        server=True,
    ).write(pki.dir, "apiserver")
    ca.issue("kube-apiserver-kubelet-client", organizations=["system:masters"], client=True).write(
        pki.dir, "apiserver-kubelet-client"
    )
    ca.issue(
        f"system:node:{layout.node_name}",
        ip_addresses=[layout.node_ip],
        dns_names=[layout.node_name],
        server=True,
    ).write(pki.dir, "kubelet-serving")
    for stem in ("kube-controller-manager", "kube-scheduler"):
        ca.issue(stem, ip_addresses=[layout.node_ip, "127.0.0.1"], server=True).write(
            pki.dir, f"{stem}-serving"
        )
    private, public = service_account_keys()
    KeyPair(public, private).write(pki.dir, "sa")  # sa.crt holds the public key
    users = {
        "admin": ca.issue("aegis-admin", organizations=["system:masters"], client=True),
        "kube-controller-manager": ca.issue("system:kube-controller-manager", client=True),
        "kube-scheduler": ca.issue("system:kube-scheduler", client=True),
        "kube-proxy": ca.issue("system:kube-proxy", client=True),
        "kubelet": ca.issue(
            f"system:node:{layout.node_name}", organizations=["system:nodes"], client=True
        ),
    }
    users["admin"].write(pki.dir, "admin-client")  # for the host's own health checks
    for user, pair in users.items():
        _write_private(
            pki.kubeconfig(user), kubeconfig_text(layout.server, ca.cert_pem, pair, user)
        )
    return pki
