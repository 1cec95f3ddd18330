"""Configuration files of containerd, the CNI plugins, the kubelet and kube-proxy.

The settings that make a node work on a machine where root lacks CAP_SYS_RESOURCE
(nothing may lower an oom_score_adj) and cgroups are v1:

* containerd CRI: ``restrict_oom_score_adj = true`` (a container's score is never set
  below containerd's own), ``SystemdCgroup = false`` (cgroupfs, no systemd here).
* kubelet: ``cgroupDriver: cgroupfs``, ``failCgroupV1: false``, ``failSwapOn: false``,
  ``localStorageCapacityIsolation: false``, ``protectKernelDefaults: false``,
  ``oomScoreAdj: 0`` (its default -999 needs the missing capability), and the feature
  gate ``KubeletInUserNamespace`` (tolerates the sysctls and rlimits it may not set).

The kubelet also runs with ``syncFrequency: 2s``: a ConfigMap mounted as a volume is
re-synced at that pace, so an update reaches the pod's files within a few seconds.
"""

from __future__ import annotations

import json
from pathlib import Path

from .certs import ClusterPki
from .layout import Layout

CNI_BIN_DIR = "/usr/lib/cni"


def containerd_config(layout: Layout, sandbox_image: str) -> str:
    """containerd 1.6 configuration (version 2 schema)."""
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    return f"""version = 2
root = "{layout.containerd_root}"
state = "/run/containerd/state"
oom_score = 0
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp",
]

[grpc]
  address = "{layout.containerd_socket}"

[plugins."io.containerd.internal.v1.opt"]
  path = "{layout.containerd_root}/opt"

[{cri}]
  sandbox_image = "{sandbox_image}"
  restrict_oom_score_adj = true
  disable_apparmor = true
  enable_selinux = false
  stream_server_address = "127.0.0.1"
  max_container_log_line_size = 16384

[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"

[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[{cri}.containerd.runtimes.runc.options]
  SystemdCgroup = false

[{cri}.cni]
  bin_dir = "{CNI_BIN_DIR}"
  conf_dir = "{layout.cni_conf_dir}"
  max_conf_num = 1
"""


def cni_config(layout: Layout) -> str:
    """Bridge + host-local addresses from the pod range, and portmap for hostPorts."""
    config = {
        "cniVersion": "1.0.0",
        "name": f"{layout.name}-pods",
        "plugins": [
            {
                "type": "bridge",
                "bridge": layout.bridge,
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": layout.pod_cidr, "gateway": layout.pod_gateway}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(layout.cni_ipam_dir),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }
    return json.dumps(config, indent=2) + "\n"


def kubelet_config(layout: Layout, pki: ClusterPki) -> str:
    """KubeletConfiguration (JSON, which the kubelet reads as YAML)."""
    config = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": layout.node_ip,
        "port": 10250,
        "readOnlyPort": 0,
        "healthzBindAddress": layout.node_ip,
        "healthzPort": 10248,
        "tlsCertFile": str(pki.crt("kubelet-serving")),
        "tlsPrivateKeyFile": str(pki.key("kubelet-serving")),
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(pki.crt("ca"))},
        },
        "authorization": {"mode": "Webhook"},
        "containerRuntimeEndpoint": f"unix://{layout.containerd_socket}",
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": f"/{layout.cgroup_name}",
        "failCgroupV1": False,
        "failSwapOn": False,
        "localStorageCapacityIsolation": False,
        "protectKernelDefaults": False,
        "oomScoreAdj": 0,
        "featureGates": {"KubeletInUserNamespace": True},
        "clusterDNS": [layout.dns_ip],
        "clusterDomain": layout.cluster_domain,
        # No upstream resolvers: names outside the cluster never leave the machine.
        "resolvConf": "",
        "syncFrequency": "2s",
        "configMapAndSecretChangeDetectionStrategy": "Watch",
        "fileCheckFrequency": "20s",
        "nodeStatusUpdateFrequency": "5s",
        "nodeStatusReportFrequency": "1m",
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {
            "memory.available": "50Mi",
            "nodefs.available": "1%",
            "imagefs.available": "1%",
        },
        "serializeImagePulls": False,
        "rotateCertificates": False,
        "serverTLSBootstrap": False,
        "maxPods": 110,
        "shutdownGracePeriod": "0s",
    }
    return json.dumps(config, indent=2) + "\n"


def kube_proxy_config(layout: Layout, pki: ClusterPki) -> str:
    """KubeProxyConfiguration: iptables mode, and no host-wide conntrack sysctls."""
    config = {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(pki.kubeconfig("kube-proxy"))},
        "hostnameOverride": layout.node_name,
        "mode": "iptables",
        "clusterCIDR": layout.pod_cidr,
        "bindAddress": layout.node_ip,
        "healthzBindAddress": f"{layout.node_ip}:10256",
        "metricsBindAddress": "127.0.0.1:10249",
        # nf_conntrack_max & co. are not per network namespace: leave them alone.
        "conntrack": {
            "maxPerCore": 0,
            "min": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
        },
        "iptables": {"syncPeriod": "10s", "minSyncPeriod": "0s"},
    }
    return json.dumps(config, indent=2) + "\n"


def write_all(layout: Layout, pki: ClusterPki, sandbox_image: str) -> dict[str, Path]:
    """Write every file; returns their paths by name."""
    layout.etc.mkdir(parents=True, exist_ok=True)
    layout.cni_conf_dir.mkdir(parents=True, exist_ok=True)
    files = {
        "containerd": (layout.etc / "containerd.toml", containerd_config(layout, sandbox_image)),
        "cni": (layout.cni_conf_dir / "10-aegis.conflist", cni_config(layout)),
        "kubelet": (layout.etc / "kubelet.yaml", kubelet_config(layout, pki)),
        "kube-proxy": (layout.etc / "kube-proxy.yaml", kube_proxy_config(layout, pki)),
    }
    for path, text in files.values():
        path.write_text(text)
    return {name: path for name, (path, _text) in files.items()}
