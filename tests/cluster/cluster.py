"""Bring a cluster up (or reuse a healthy one), check its health, take it down.

One cluster per `Layout` at a time, serialised by a lock file. ``state.json`` records
the holder (PID, start time, namespaces) and a fingerprint of the binaries and of this
package's code: a cluster is reused only when it is healthy and its fingerprint
matches; anything else found under the same name is removed first.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tests.controlplane import versions
from tests.controlplane.build import Testbin

from . import addons, certs, cleanup, components, configs, hostnet
from .holder import Holder, members
from .images import Images
from .layout import Layout
from .shell import ClusterError, run

Log = Callable[[str], None]
_CODE = ("addons", "certs", "components", "configs", "holder", "hostnet", "layout")
#: Process names (comm, 15 characters at most) of the servers of a healthy cluster.
SERVERS = (
    "etcd",
    "kube-apiserver",
    "kube-controller",
    "kube-scheduler",
    "containerd",
    "kubelet",
    "kube-proxy",
)


def fingerprint(testbin: Testbin) -> str:
    digest = hashlib.sha256()
    digest.update(f"{versions.KUBERNETES} {versions.ETCD} {versions.COREDNS}".encode())
    for module in _CODE:
        digest.update((Path(__file__).parent / f"{module}.py").read_bytes())
    digest.update(str(testbin.dir).encode())
    return digest.hexdigest()[:16]


@dataclass
class State:
    holder: dict[str, Any]
    fingerprint: str
    ready: bool = False
    started_at: str = ""
    owner: str = ""

    def holder_ref(self) -> Holder:
        return Holder(**self.holder)

    @classmethod
    def read(cls, layout: Layout) -> State | None:
        try:
            return cls(**json.loads(layout.state_file.read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def write(self, layout: Layout) -> None:
        partial = layout.state_file.with_suffix(".partial")
        partial.write_text(json.dumps(asdict(self), indent=2) + "\n")
        partial.replace(layout.state_file)


@contextmanager
def locked(layout: Layout) -> Iterator[None]:
    layout.root.mkdir(parents=True, exist_ok=True)
    with layout.lock_file.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


class Cluster:
    """A one-node cluster named by `layout`, started from `testbin` and `images`."""

    def __init__(
        self, layout: Layout, testbin: Testbin, log: Log, *, keep_failed: bool = False
    ) -> None:
        self.layout = layout
        self.testbin = testbin
        self.log = log
        self.keep_failed = keep_failed  # leave a failed start in place to debug it

    # -- kubectl ------------------------------------------------------------------------
    def kubectl(self, *args: str, input: str | None = None, timeout: float = 120.0) -> str:
        argv = [str(self.testbin.kubectl), f"--kubeconfig={self.layout.kubeconfig}", *args]
        return run(argv, input=input, timeout=timeout).stdout

    # -- health -------------------------------------------------------------------------
    def problems(self) -> list[str]:
        """Why the running cluster is not usable (empty: healthy and current)."""
        state = State.read(self.layout)
        if state is None:
            return ["no state file"]
        if not state.ready:
            return ["never finished starting"]
        if state.fingerprint != fingerprint(self.testbin):
            return ["started from other binaries or cluster code"]
        holder = state.holder_ref()
        if not holder.alive:
            return ["its processes are gone"]
        comms = set()
        for pid in members(holder.pid_ns, "pid"):
            try:
                comms.add(Path(f"/proc/{pid}/comm").read_text().strip())
            except OSError:
                continue
        found = [f"{name} is not running" for name in SERVERS if name not in comms]
        if found:
            return found
        if not components.https_ok(
            f"{self.layout.server}/readyz", certs.ClusterPki(self.layout.pki)
        ):
            return ["the API server is not ready"]
        try:
            node = json.loads(
                self.kubectl("get", "node", self.layout.node_name, "-o", "json", timeout=20)
            )
        except ClusterError as error:
            return [f"node: {error}"]
        ready = [c for c in node["status"]["conditions"] if c["type"] == "Ready"]
        if not ready or ready[0]["status"] != "True":
            return ["the node is not Ready"]
        return []

    def healthy(self) -> bool:
        return not self.problems()

    def owner(self) -> str:
        """Who started the running cluster ("make cluster", "pytest <pid>"), or ""."""
        state = State.read(self.layout)
        return state.owner if state else ""

    # -- lifecycle ----------------------------------------------------------------------
    def up(self, images: Images, owner: str) -> bool:
        """Start the cluster unless a healthy current one runs; True when reused."""
        with locked(self.layout):
            if self.healthy():
                self.import_images(images)
                return True
            state = State.read(self.layout)
            cleanup.teardown(self.layout, self.log, state.holder_ref() if state else None)
            started = time.monotonic()
            try:
                self._start(images, owner)
            except BaseException:
                if not self.keep_failed:
                    state = State.read(self.layout)
                    cleanup.teardown(self.layout, self.log, state.holder_ref() if state else None)
                raise
            self.log(f"cluster {self.layout.name}: up in {time.monotonic() - started:.0f}s")
            return False

    def down(self) -> list[str]:
        """Remove the cluster; returns whatever is still left on the machine (nothing)."""
        with locked(self.layout):
            state = State.read(self.layout)
            cleanup.teardown(self.layout, self.log, state.holder_ref() if state else None)
            return cleanup.leftovers(self.layout)

    def _start(self, images: Images, owner: str) -> None:
        layout = self.layout
        shutil.rmtree(layout.dir, ignore_errors=True)
        for directory in (layout.dir, layout.logs, layout.etcd_data, layout.kubelet_root):
            directory.mkdir(parents=True, exist_ok=True)
        pki = certs.create(layout)
        files = configs.write_all(layout, pki, images.pause.ref)
        hostnet.create(layout)
        cleanup.create_cgroups(layout)
        holder = Holder.start(layout, sys.executable, layout.logs / "holder.log")
        state = State(
            asdict(holder),
            fingerprint(self.testbin),
            started_at=time.strftime("%FT%T"),
            owner=owner,
        )
        state.write(layout)
        for server in components.servers(layout, pki, self.testbin, files):
            step = time.monotonic()
            log_path = layout.logs / f"{server.name}.log"
            proc = holder.spawn(server.argv, log_path)
            components.wait_up(server, proc, log_path, holder)
            self.log(f"  {server.name} up in {time.monotonic() - step:.1f}s")
            if server.name == "kube-apiserver":
                shutil.copyfile(pki.kubeconfig("admin"), layout.kubeconfig)
                layout.kubeconfig.chmod(0o600)
            if server.name == "containerd":
                self._import(holder, images)
        step = time.monotonic()
        self.kubectl(
            "wait",
            "--for=condition=Ready",
            f"node/{layout.node_name}",
            "--timeout=120s",
            timeout=150,
        )
        self.log(f"  node {layout.node_name} Ready in {time.monotonic() - step:.1f}s")
        step = time.monotonic()
        manifests = addons.coredns_manifests(layout, images.coredns.short)
        self.kubectl(
            "apply",
            "-f",
            "-",
            input=json.dumps({"apiVersion": "v1", "kind": "List", "items": manifests}),
        )
        self.kubectl(
            "-n",
            "kube-system",
            "rollout",
            "status",
            "deployment/coredns",
            "--timeout=180s",
            timeout=200,
        )
        self.log(f"  CoreDNS ready in {time.monotonic() - step:.1f}s")
        state.ready = True
        state.write(layout)

    def _import(self, holder: Holder, images: Images) -> None:
        step = time.monotonic()
        ctr = ["ctr", f"--address={self.layout.containerd_socket}", "--namespace=k8s.io"]
        present = set(run(holder.exec_argv([*ctr, "images", "list", "--quiet"])).stdout.split())
        for image in images.all():
            if image.ref not in present:
                run(holder.exec_argv([*ctr, "images", "import", str(image.archive)]), timeout=600)
        present = set(run(holder.exec_argv([*ctr, "images", "list", "--quiet"])).stdout.split())
        missing = [image.ref for image in images.all() if image.ref not in present]
        if missing:
            raise ClusterError(
                f"containerd does not list {missing} after the import: {sorted(present)}"
            )
        names = ", ".join(image.short for image in images.all())
        self.log(f"  images imported in {time.monotonic() - step:.1f}s: {names}")

    def import_images(self, images: Images) -> None:
        """Import `images` into the running cluster's containerd (missing ones only)."""
        state = State.read(self.layout)
        if state is None:
            raise ClusterError("no running cluster")
        self._import(state.holder_ref(), images)
