"""A cluster whose launcher died is found by name and removed without a trace.

A small stand-in for a killed run, on its own name and address ranges (so it never
touches the session's cluster): the namespaces, the veth pair, the pod bridge, cgroups,
a process in the cluster, a mount in its mount namespace and an iptables chain in its
network namespace, and no state file. `teardown` must remove all of it, and
`leftovers` must see it before and nothing after.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster import cleanup, hostnet
from tests.cluster.holder import Holder, members
from tests.cluster.layout import Layout
from tests.cluster.shell import run
from tests.controlplane.procs import wait_until
from tests.node.conftest import Say

pytestmark = [pytest.mark.node]


@pytest.fixture
def stale_layout(tmp_path: Path) -> Iterator[Layout]:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    layout = Layout(
        name="stale",
        root=tmp_path,
        link_cidr="10.214.255.0/30",
        host_ip="10.214.255.1",
        node_ip="10.214.255.2",
        pod_cidr="10.214.0.0/24",
        pod_gateway="10.214.0.1",
        service_cidr="10.214.128.0/24",
        api_service_ip="10.214.128.1",
        dns_ip="10.214.128.10",
        bridge="stale0",
    )
    yield layout
    cleanup.teardown(layout, lambda _line: None)  # whatever the test left


def test_teardown_removes_a_cluster_whose_launcher_died(stale_layout: Layout, say: Say) -> None:
    layout = stale_layout
    layout.dir.mkdir(parents=True)
    hostnet.create(layout)
    cleanup.create_cgroups(layout)
    holder = Holder.start(layout, sys.executable, layout.dir / "holder.log")
    sleeper = holder.spawn(["sleep", "3600"], layout.dir / "sleep.log")
    (layout.dir / "mnt").mkdir()
    for argv in (
        ["mount", "-t", "tmpfs", "stale-test", str(layout.dir / "mnt")],
        ["iptables", "-t", "nat", "-N", "KUBE-STALE-TEST"],
    ):
        run(holder.exec_argv(argv))
    pod_cgroup = Path("/sys/fs/cgroup/memory") / layout.cgroup_name / "pod"
    pod_cgroup.mkdir()
    inside = wait_until(
        lambda: [p for p in members(holder.pid_ns, "pid") if p != holder.pid],
        timeout=10,
        what="the process inside the cluster",
    )
    (pod_cgroup / "cgroup.procs").write_text(str(inside[0]))

    before = cleanup.leftovers(layout)
    assert any(item.startswith("network namespace") for item in before), before
    assert any(item.startswith("interface") for item in before), before
    assert any(item.startswith("cgroup") for item in before), before
    assert any(item.startswith("process") for item in before), before

    started = time.monotonic()
    cleanup.teardown(layout, say)  # no state, no holder handle: found by name
    assert sleeper.wait(timeout=10) is not None
    after = cleanup.leftovers(layout)
    assert after == [], after
    assert not Path(f"/proc/{inside[0]}").exists()
    assert not holder.alive
    say(f"stale cluster ({len(before)} things) removed in {time.monotonic() - started:.1f}s")
