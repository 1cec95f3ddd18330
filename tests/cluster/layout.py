"""Names, paths and addresses of one cluster: everything else derives from a `Layout`.

All state lives under ``$AEGIS_CLUSTER_ROOT/<name>`` (default ``/var/lib/aegis-cluster``):
PKI, configuration, logs, etcd's data, containerd's content and snapshots, the kubelet's
root directory, the CNI address leases and the node's /var/log (bind-mounted inside
the cluster's mount namespace). Network addresses come from 10.213.0.0/16, checked
against the host's routes before anything is created:

* link host <-> node: 10.213.255.0/30, the host end ``<name>-host`` 10.213.255.1, the
  node end ``eth0`` 10.213.255.2 (node IP, API server ``https://10.213.255.2:6443``)
* pods: 10.213.0.0/24 on the bridge ``aegis0`` (gateway 10.213.0.1)
* services: 10.213.128.0/24 (``kubernetes`` 10.213.128.1, ``kube-dns`` 10.213.128.10)

The host routes the pod and service ranges through the veth, so pod and cluster IPs
are reachable from the host too (and never leave by the host's default route).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

DEFAULT_NAME = "aegis"
DEFAULT_ROOT = Path("/var/lib/aegis-cluster")
_NAME = re.compile(r"[a-z][a-z0-9]{0,9}")  # <name>-host must fit IFNAMSIZ (15)


def cluster_root() -> Path:
    configured = os.environ.get("AEGIS_CLUSTER_ROOT", "").strip()
    return Path(configured).expanduser() if configured else DEFAULT_ROOT


def cluster_name() -> str:
    return os.environ.get("AEGIS_CLUSTER_NAME", "").strip() or DEFAULT_NAME


@dataclass(frozen=True)
class Layout:
    """One cluster: `name` keys its namespace, interfaces, cgroups and state directory."""

    name: str = DEFAULT_NAME
    root: Path = DEFAULT_ROOT

    # Network (one cluster per machine at a time: the ranges are fixed).
    link_cidr: str = "10.213.255.0/30"
    host_ip: str = "10.213.255.1"
    node_ip: str = "10.213.255.2"
    pod_cidr: str = "10.213.0.0/24"
    pod_gateway: str = "10.213.0.1"
    service_cidr: str = "10.213.128.0/24"
    api_service_ip: str = "10.213.128.1"
    dns_ip: str = "10.213.128.10"
    api_port: int = 6443
    bridge: str = "aegis0"
    node_veth: str = "eth0"
    cluster_domain: str = "cluster.local"

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name):
            raise ValueError(f"cluster name {self.name!r}: 1-10 of [a-z0-9], starting a-z")

    @classmethod
    def from_env(cls) -> Layout:
        """``AEGIS_CLUSTER_NAME`` / ``AEGIS_CLUSTER_ROOT`` or the defaults."""
        return cls(name=cluster_name(), root=cluster_root())

    # -- names ---------------------------------------------------------------------------
    @property
    def netns(self) -> str:
        return f"{self.name}-node"

    @property
    def netns_path(self) -> Path:
        return Path("/run/netns") / self.netns

    @property
    def host_veth(self) -> str:
        return f"{self.name}-host"

    @property
    def node_name(self) -> str:
        return f"{self.name}-node"

    @property
    def cgroup_name(self) -> str:
        """Top cgroup (in every v1 hierarchy) of the kubelet's pods: ``cgroupRoot``."""
        return f"{self.name}-cluster"

    @property
    def server(self) -> str:
        return f"https://{self.node_ip}:{self.api_port}"

    # -- paths ---------------------------------------------------------------------------
    @property
    def dir(self) -> Path:
        return self.root / self.name

    @property
    def lock_file(self) -> Path:
        return self.root / f"{self.name}.lock"

    @property
    def state_file(self) -> Path:
        return self.dir / "state.json"

    @property
    def kubeconfig(self) -> Path:
        return self.dir / "kubeconfig"

    @property
    def pki(self) -> Path:
        return self.dir / "pki"

    @property
    def etc(self) -> Path:
        return self.dir / "etc"

    @property
    def logs(self) -> Path:
        return self.dir / "logs"

    @property
    def etcd_data(self) -> Path:
        return self.dir / "etcd"

    @property
    def containerd_root(self) -> Path:
        return self.dir / "containerd"

    @property
    def kubelet_root(self) -> Path:
        return self.dir / "kubelet"

    @property
    def cni_conf_dir(self) -> Path:
        return self.etc / "cni"

    @property
    def cni_ipam_dir(self) -> Path:
        return self.dir / "cni-ipam"

    @property
    def varlog(self) -> Path:
        """Bind-mounted on /var/log inside the cluster (pod logs)."""
        return self.dir / "varlog"

    # Inside the cluster's mount namespace, /run is a private tmpfs.
    containerd_socket: str = "/run/containerd/containerd.sock"
