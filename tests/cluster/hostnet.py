"""The cluster's network namespace and its veth link to the host.

Everything of the cluster's network lives in the namespace ``<name>-node``: the node's
``eth0``, the pod bridge, the pods' veths and namespaces, and every iptables rule
kube-proxy, the kubelet and the CNI plugins write. On the host there is only the veth
end ``<name>-host`` with two routes through it (pods, services); deleting the namespace
deletes the veth pair, and with it those routes.

Enter the namespace with ``nsenter --net=/run/netns/<name>-node``, never with
``ip netns exec``: the latter mounts a fresh /sys, hiding the cgroup mounts, and runc
then fails with "no cgroup mount found in mountinfo".
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Sequence

from .layout import Layout
from .shell import ClusterError, run


def in_netns(layout: Layout, argv: Sequence[str]) -> list[str]:
    """`argv` run inside the cluster's network namespace (and nothing else)."""
    return ["nsenter", f"--net={layout.netns_path}", "--", *argv]


def exists(layout: Layout) -> bool:
    return layout.netns_path.exists()


def host_link_exists(layout: Layout) -> bool:
    return run(["ip", "link", "show", "dev", layout.host_veth], check=False).returncode == 0


def conflicting_routes(layout: Layout) -> list[str]:
    """Host routes (not ours) that overlap the cluster's address ranges."""
    ours = [
        ipaddress.ip_network(cidr)
        for cidr in (layout.link_cidr, layout.pod_cidr, layout.service_cidr)
    ]
    routes = json.loads(run(["ip", "-j", "route", "show", "table", "all"]).stdout or "[]")
    conflicts = []
    for route in routes:
        dst = route.get("dst", "")
        if route.get("dev") == layout.host_veth or dst in ("", "default"):
            continue
        try:
            network = ipaddress.ip_network(dst, strict=False)
        except ValueError:
            continue
        if (
            network.version == 4
            and network.prefixlen > 0
            and any(network.overlaps(o) for o in ours)
        ):
            conflicts.append(f"{dst} dev {route.get('dev', '?')}")
    return conflicts


def create(layout: Layout) -> None:
    """Namespace, veth pair, addresses, host routes and the namespace's sysctls."""
    conflicts = conflicting_routes(layout)
    if conflicts:
        raise ClusterError(
            f"the host already routes addresses the cluster would use "
            f"({layout.link_cidr}, {layout.pod_cidr}, {layout.service_cidr}): "
            + ", ".join(conflicts)
        )
    run(["ip", "netns", "add", layout.netns])
    try:
        prefix = ipaddress.ip_network(layout.link_cidr).prefixlen
        pod_prefix = ipaddress.ip_network(layout.pod_cidr).prefixlen
        run(
            [
                "ip",
                "link",
                "add",
                layout.host_veth,
                "type",
                "veth",
                "peer",
                "name",
                layout.node_veth,
                "netns",
                layout.netns,
            ]
        )
        run(["ip", "addr", "add", f"{layout.host_ip}/{prefix}", "dev", layout.host_veth])
        run(["ip", "link", "set", layout.host_veth, "up"])
        for argv in (
            ["ip", "link", "set", "lo", "up"],
            ["ip", "addr", "add", f"{layout.node_ip}/{prefix}", "dev", layout.node_veth],
            ["ip", "link", "set", layout.node_veth, "up"],
            # Services and pods route through the node; the kernel's own forwarding, and
            # bridged pod traffic through iptables (kube-proxy's hairpin and DNAT).
            # The pod bridge exists before the first pod (the CNI bridge plugin adopts it),
            # so that the service range can be routed to it: a process of the node (the
            # API server calling a webhook) needs a route to a ClusterIP before
            # kube-proxy's DNAT picks the pod. There is no default route, so nothing
            # for an unknown address ever leaves the node.
            ["ip", "link", "add", layout.bridge, "type", "bridge"],
            ["ip", "addr", "add", f"{layout.pod_gateway}/{pod_prefix}", "dev", layout.bridge],
            ["ip", "link", "set", layout.bridge, "up"],
            ["ip", "route", "add", layout.service_cidr, "dev", layout.bridge],
            ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"],
            ["sysctl", "-q", "-w", "net.bridge.bridge-nf-call-iptables=1"],
        ):
            run(in_netns(layout, argv))
        for cidr in (layout.pod_cidr, layout.service_cidr):
            run(["ip", "route", "add", cidr, "via", layout.node_ip, "dev", layout.host_veth])
    except BaseException:
        delete(layout)
        raise


def delete(layout: Layout) -> None:
    """Remove the namespace (and so the veth pair and its routes); idempotent."""
    if exists(layout):
        run(["ip", "netns", "delete", layout.netns], check=False)
    if host_link_exists(layout):
        run(["ip", "link", "delete", layout.host_veth], check=False)
    if layout.netns_path.exists():  # a file left by a half-failed `ip netns add`
        layout.netns_path.unlink(missing_ok=True)
