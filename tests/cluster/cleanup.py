"""Removing a cluster, also one left by a killed run, and checking nothing is left behind.

Teardown kills the holder (and so, by the kernel, every process and mount of the
cluster), kills anything still in the cluster's network namespace or cgroups, removes
the cgroups, the namespace (with the veth pair, the bridge, the routes and every
iptables rule, which all live in it) and the state directory. It needs no state file:
everything is found by name, so a cluster whose launcher was SIGKILLed mid-start is
removed too.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path

from .holder import Holder, marker, members, namespace_id
from .hostnet import delete as delete_network
from .layout import Layout
from .shell import ClusterError, run

CGROUP_ROOT = Path("/sys/fs/cgroup")
Log = Callable[[str], None]


def cgroup_dirs(layout: Layout) -> list[Path]:
    """The cluster's top cgroup in each v1 hierarchy (those that exist)."""
    if not CGROUP_ROOT.is_dir():
        return []
    return [
        h / layout.cgroup_name for h in CGROUP_ROOT.iterdir() if (h / layout.cgroup_name).is_dir()
    ]


def create_cgroups(layout: Layout) -> None:
    """The kubelet's ``cgroupRoot`` must exist in every hierarchy before it starts."""
    for hierarchy in CGROUP_ROOT.iterdir():
        if not (hierarchy / "cgroup.procs").exists():
            continue  # not a hierarchy (cgroup v1 aliases like cpu,cpuacct are symlinks)
        top = hierarchy / layout.cgroup_name
        top.mkdir(exist_ok=True)
        for knob in ("cpuset.cpus", "cpuset.mems"):  # a new cpuset starts empty
            if (top / knob).exists() and not (top / knob).read_text().strip():
                (top / knob).write_text((hierarchy / knob).read_text())


def _cgroup_pids(top: Path) -> set[int]:
    pids: set[int] = set()
    for procs in top.rglob("cgroup.procs"):
        with contextlib.suppress(OSError):
            pids.update(int(line) for line in procs.read_text().split())
    return pids


def _remove_cgroup_tree(top: Path) -> None:
    for directory in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        with contextlib.suppress(OSError):
            directory.rmdir()
    with contextlib.suppress(OSError):
        top.rmdir()


def _kill(pids: set[int] | list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def _holders(layout: Layout) -> list[int]:
    """Host PIDs of this cluster's holder(s), found by their network namespace."""
    if not layout.netns_path.exists():
        return []
    try:
        netns = f"net:[{layout.netns_path.stat().st_ino}]"
    except OSError:
        return []
    found = []
    for pid in members(netns, "net"):
        with contextlib.suppress(OSError):
            if marker(layout).encode() in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0"):
                found.append(pid)
    return found


def _netns_members(layout: Layout) -> list[int]:
    if not layout.netns_path.exists():
        return []
    with contextlib.suppress(OSError):
        return members(f"net:[{layout.netns_path.stat().st_ino}]", "net")
    return []


def teardown(layout: Layout, log: Log, holder: Holder | None = None) -> None:
    """Remove everything the cluster `layout` made; idempotent, needs no state."""
    started = time.monotonic()
    targets = set(_holders(layout))
    if holder is not None and holder.alive:
        targets.add(holder.pid)
    namespaces = {namespace_id(pid, "pid") for pid in targets} - {""}
    _kill(targets)
    deadline = time.monotonic() + 30
    while any(members(ns, "pid") for ns in namespaces):
        if time.monotonic() > deadline:
            raise ClusterError("processes of the cluster survive the SIGKILL of its holder")
        time.sleep(0.1)  # poll under the deadline above
    # hostNetwork containers share the node's netns but not the holder's PID namespace
    # only if something escaped; same for the pods' cgroups.
    deadline = time.monotonic() + 30
    while True:
        stray = set(_netns_members(layout))
        for top in cgroup_dirs(layout):
            stray |= _cgroup_pids(top)
        if not stray:
            break
        if time.monotonic() > deadline:
            raise ClusterError(f"cluster processes survive SIGKILL: {sorted(stray)}")
        _kill(stray)
        time.sleep(0.2)  # poll under the deadline above
    # The launchers outside the namespaces (`unshare` above the holder, an `nsenter` above
    # each server) exit once their child is gone; anything else naming the cluster's
    # directory is a leftover of ours too.
    deadline = time.monotonic() + 15
    while stragglers := _processes_of(layout):
        if time.monotonic() > deadline:
            raise ClusterError(f"cluster processes survive SIGKILL: {stragglers}")
        if time.monotonic() > deadline - 10:
            _kill(set(stragglers))
        time.sleep(0.1)  # poll under the deadline above
    for top in cgroup_dirs(layout):
        _remove_cgroup_tree(top)
    delete_network(layout)
    existed = layout.dir.exists()
    if existed:
        busy = host_mounts(layout)
        if busy:
            raise ClusterError(f"mounts left under {layout.dir}: {busy}")
        shutil.rmtree(layout.dir, ignore_errors=True)
    if targets or existed:
        log(f"cluster {layout.name}: removed in {time.monotonic() - started:.1f}s")


def _processes_of(layout: Layout) -> dict[int, str]:
    """Live processes whose command line names the cluster's directory (its holder too)."""
    needles = (str(layout.dir).encode(),)  # the holder's marker names the directory too
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            cmdline = (entry / "cmdline").read_bytes()  # empty for a zombie
            if any(needle in cmdline for needle in needles):
                found[int(entry.name)] = cmdline.replace(b"\0", b" ").decode(errors="replace")[:160]
    return found


def host_mounts(layout: Layout) -> list[str]:
    """Mount points in the host's mount namespace that belong to the cluster."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        mount_point = line.split()[4]
        ours = (str(layout.dir), "/run/netns/cni-")
        if mount_point.startswith(ours) or mount_point == str(layout.netns_path):
            found.append(mount_point)
    return found


def _iptables_leftovers(layout: Layout) -> list[str]:
    """Host iptables rules (nft and legacy) that name the cluster's chains or ranges."""
    needles = ("KUBE-", "CNI-", layout.pod_cidr, layout.service_cidr, layout.host_veth)
    found = []
    for tool in ("iptables-save", "iptables-legacy-save", "iptables-nft-save"):
        if not shutil.which(tool):
            continue
        output = run([tool], check=False).stdout
        found += [
            f"{tool}: {line}" for line in output.splitlines() if any(n in line for n in needles)
        ]
    return sorted(set(found))


def leftovers(layout: Layout) -> list[str]:
    """Everything of the cluster still on the machine (empty after a clean teardown)."""
    found: list[str] = []
    if layout.netns_path.exists():
        found.append(f"network namespace {layout.netns_path}")
    netns_dir = Path("/run/netns")
    if netns_dir.is_dir():
        found += [f"network namespace {p}" for p in netns_dir.glob("cni-*")]
    links = run(["ip", "-o", "link", "show"], check=False).stdout
    found += [
        f"interface {line.split(':')[1].strip()}"
        for line in links.splitlines()
        if layout.host_veth in line or layout.bridge in line
    ]
    routes = run(["ip", "route", "show"], check=False).stdout
    ranges = (layout.pod_cidr, layout.service_cidr, layout.link_cidr, layout.host_veth)
    found += [f"route {line}" for line in routes.splitlines() if any(r in line for r in ranges)]
    found += [f"mount {m}" for m in host_mounts(layout)]
    found += [f"cgroup {d}" for d in cgroup_dirs(layout)]
    found += [f"iptables {rule}" for rule in _iptables_leftovers(layout)]
    for pid, text in _processes_of(layout).items():
        found.append(f"process {pid}: {text}")
    if layout.dir.exists():
        found.append(f"directory {layout.dir}")
    return found
