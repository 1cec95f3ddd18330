"""The holder: PID 1 of the cluster's own PID and mount namespaces, inside its netns.

Every server of the cluster (etcd, the Kubernetes servers, containerd and, through its
shims, every container) runs in this PID namespace. Killing the holder (SIGKILL from
the host) makes the kernel kill every process in the namespace and in the containers'
nested ones, and the last process out takes the mount namespace with it: containerd's
overlay mounts, the kubelet's volume mounts and the pods' network-namespace bind
mounts all disappear, with nothing left mounted on the host.

Inside, the mount namespace is private to the cluster: / is re-shared among the
cluster's own mounts (the kubelet wants a shared root for mount propagation), /run is
a fresh tmpfs (containerd's sockets and state, the pods' ``/run/netns/cni-*``) and
/var/log is the cluster's ``varlog`` directory (pod logs).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .layout import Layout
from .shell import SYSTEM_PATH, ClusterError

# PID 1 reaps whatever is reparented to it; it never exits on its own.
_INIT = (
    "import os, time\n"
    "while True:\n"
    "    try:\n"
    "        os.waitpid(-1, 0)\n"
    "    except ChildProcessError:\n"
    "        time.sleep(1)  # pacing: PID 1 idles until a child exists\n"
)
_MARK = "aegis-cluster-holder"


def marker(layout: Layout) -> str:
    """The holder's last argument: names the cluster, so teardown never hits another one."""
    return f"{_MARK}={layout.dir}"


def _setup_script(layout: Layout, python: str) -> str:
    return "\n".join(
        [
            "set -eu",
            "mount --make-rshared /",
            f"mount -t tmpfs -o mode=0755,size=512m {_MARK} /run",
            "mkdir -p /run/netns /run/containerd /run/lock",
            f"mount --bind {layout.varlog} /var/log",
            f"exec {python} -c '{_INIT}' {marker(layout)}",
        ]
    )


def minimal_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of the cluster's servers: no proxies or other host settings."""
    env = {"PATH": SYSTEM_PATH, "HOME": "/root", "LANG": "C.UTF-8"}
    env.update(extra or {})
    return env


def _start_time(pid: int) -> int | None:
    """Start time (clock ticks since boot) of `pid`, or None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def namespace_id(pid: int | str, kind: str) -> str:
    """``net:[4026532…]`` for /proc/<pid>/ns/<kind>, or "" when unreadable."""
    try:
        return os.readlink(f"/proc/{pid}/ns/{kind}")
    except OSError:
        return ""


@dataclass(frozen=True)
class Holder:
    """A running holder, identified by its host PID and start time (PIDs get reused)."""

    pid: int
    start_time: int
    pid_ns: str
    mnt_ns: str

    @property
    def alive(self) -> bool:
        return _start_time(self.pid) == self.start_time

    @classmethod
    def start(cls, layout: Layout, python: str, log_path: Path, timeout: float = 30.0) -> Holder:
        """Start the holder inside the cluster's netns and wait until its mounts are made."""
        layout.varlog.mkdir(parents=True, exist_ok=True)
        argv = [
            "nsenter",
            f"--net={layout.netns_path}",
            "--",
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "--pid",
            "--fork",
            "--mount-proc",
            "--",
            "/bin/sh",
            "-c",
            _setup_script(layout, python),
        ]
        with log_path.open("ab") as log:
            launcher = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=minimal_env(),
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if launcher.poll() is not None:
                raise ClusterError(
                    f"namespace holder exited with {launcher.returncode}: "
                    + log_path.read_text(errors="replace")[-2000:]
                )
            pid = _init_pid(launcher.pid, marker(layout))
            if pid is not None:
                start = _start_time(pid)
                if start is not None:
                    return cls(pid, start, namespace_id(pid, "pid"), namespace_id(pid, "mnt"))
            time.sleep(0.1)  # poll under the deadline above
        launcher.kill()
        raise ClusterError(f"namespace holder did not start in {timeout:.0f}s")

    def spawn(
        self,
        argv: Sequence[str],
        log_path: Path,
        *,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start `argv` inside the cluster (all its namespaces), output to `log_path`.

        The process outlives the caller (own session, no death signal), so `make cluster`
        can return; it dies with the holder.
        """
        full = ["nsenter", f"--target={self.pid}", "--net", "--mount", "--pid", "--", *argv]
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log:
            log.write(f"\n=== {time.strftime('%H:%M:%S')} $ {' '.join(argv)}\n".encode())
            log.flush()
            return subprocess.Popen(
                full,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=minimal_env(env),
                start_new_session=True,
            )

    def exec_argv(self, argv: Sequence[str]) -> list[str]:
        """`argv` to run a short command inside the cluster (ctr, iptables-save, ...)."""
        return ["nsenter", f"--target={self.pid}", "--net", "--mount", "--pid", "--", *argv]

    def kill(self, timeout: float = 30.0) -> None:
        """SIGKILL PID 1 (so every process of the cluster) and wait until all are gone."""
        if self.alive:
            os.kill(self.pid, signal.SIGKILL)
        deadline = time.monotonic() + timeout
        while members(self.pid_ns, "pid"):
            if time.monotonic() > deadline:
                raise ClusterError(
                    f"processes of the cluster survived SIGKILL: {members(self.pid_ns, 'pid')}"
                )
            time.sleep(0.1)  # poll under the deadline above


def _init_pid(launcher_pid: int, mark: str) -> int | None:
    """The host PID of the holder's PID 1, once it runs the init loop (mounts done)."""
    try:
        children = Path(f"/proc/{launcher_pid}/task/{launcher_pid}/children").read_text().split()
    except OSError:
        return None
    for child in children:
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmdline[-2:] == [mark.encode(), b""]:  # the init loop, after the mounts
            return int(child)
    return None


def members(namespace: str, kind: str) -> list[int]:
    """Host PIDs of the processes in the namespace `namespace` (``pid:[…]``) of `kind`."""
    if not namespace:
        return []
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and namespace_id(entry.name, kind) == namespace:
            found.append(int(entry.name))
    return found
