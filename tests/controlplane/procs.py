"""Child servers (etcd, kube-apiserver, postgres) that never outlive the test session.

Every server runs in its own process group, so stopping it also reaps anything it
forked (postgres backends). When started from the main thread it also gets
``PR_SET_PDEATHSIG``, so even a SIGKILLed pytest leaves no orphan behind. (The
death signal fires when the *thread* that forked exits, so it is not armed for
servers started from worker threads, e.g. ``asyncio.to_thread(server.start)``.)
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")
_PR_SET_PDEATHSIG = 1


# -- ports -------------------------------------------------------------------------------
# Two ways to a port without a race, used by every test:
# - a server in this process is handed a socket already bound to a port the kernel
#   chose (:func:`bound_socket`): nothing can take it in between;
# - a server in another process is started on :func:`free_port` ports by
#   :func:`start_on_free_ports`, which starts it again on other ports when it died
#   because one was taken meanwhile (:func:`address_in_use` in its log).


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now; start a child server on it only
    through :func:`start_on_free_ports` (or a loop like it), which retries a lost race."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def free_ports(count: int) -> list[int]:
    """``count`` distinct free ports (see :func:`free_port`)."""
    ports: set[int] = set()
    while len(ports) < count:
        ports.add(free_port())
    return sorted(ports)


def bound_socket(host: str = "127.0.0.1") -> socket.socket:
    """A listening TCP socket on a port the kernel chose, for a server in this process
    (``aiohttp.web.SockSite``): the port is never free for anyone else to take."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    sock.listen(128)
    sock.setblocking(False)
    return sock


@contextlib.contextmanager
def closed_port() -> Iterator[int]:
    """A port that refuses connections for as long as the block runs: bound by us, never
    listening, so no other process can listen on it meanwhile."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def address_in_use(log: str) -> bool:
    """True when a server's log says it could not bind its port (EADDRINUSE)."""
    text = log.lower()
    return "address already in use" in text or "errno 98" in text


class PortTaken(RuntimeError):
    """A server could not bind a port another process took after it was chosen."""


def start_on_free_ports(
    start: Callable[[list[int]], ServerProcess],
    count: int,
    ready: Callable[[list[int]], bool],
    *,
    timeout: float,
    what: str,
    attempts: int = 5,
) -> tuple[ServerProcess, list[int]]:
    """``start(ports)`` a server on ``count`` free ports and wait until ``ready(ports)``;
    when it exits because a port was taken meanwhile, again on other ports. A server
    that fails otherwise (or is not ready in time) is stopped before the error is raised."""
    for attempt in range(attempts):
        ports = free_ports(count)
        process = start(ports)

        def up(process: ServerProcess = process, ports: list[int] = ports) -> bool:
            if ready(ports):
                return True
            if process.running:
                return False
            if address_in_use(process.log_tail(200)):
                raise PortTaken(process.describe_exit())
            raise AssertionError(process.describe_exit())

        try:
            wait_until(up, timeout=timeout, what=what)
        except PortTaken:
            process.stop()
            if attempt == attempts - 1:
                raise
            continue
        except TimeoutError as error:
            report = process.describe_exit()
            process.stop()  # never left running after a failed start
            raise TimeoutError(f"{error}\n{report}") from None
        except BaseException:
            process.stop()
            raise
        return process, ports
    raise AssertionError("unreachable")


def port_is_free(port: int) -> bool:
    """True when nothing listens on 127.0.0.1:`port` (TIME_WAIT leftovers don't count,
    as servers bind with SO_REUSEADDR)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def wait_until(
    check: Callable[[], T | None], *, timeout: float, what: str, interval: float = 0.1
) -> T:
    """Poll `check` until it returns a value other than None/False, or raise TimeoutError."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result is not None and result is not False:
            return result
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)  # poll interval; the deadline is checked above


# -- memory ------------------------------------------------------------------------------


def memory_kib(pid: int) -> dict[str, int]:
    """The memory figures of ``/proc/<pid>/status`` (``VmRSS``, ``VmHWM``: the peak
    since start or :func:`reset_peak_rss`, ...), in KiB."""
    figures = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key.startswith("Vm"):
            figures[key] = int(value.split()[0])
    return figures


def reset_peak_rss(pid: int) -> None:
    """Start ``pid``'s peak resident memory (``VmHWM``) afresh at its current RSS."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def _die_with_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


class ServerProcess:
    """A long-running child whose stdout+stderr go to a log file (appended across restarts)."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        *,
        env: Mapping[str, str] | None = None,
        user: int | None = None,
        group: int | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = dict(env) if env is not None else None
        self.user = user
        self.group = group
        self.cwd = cwd
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return self._proc.poll() if self._proc else None

    def start(self) -> None:
        if self.running:
            raise RuntimeError(f"{self.name} is already running (pid {self.pid})")
        in_main_thread = threading.current_thread() is threading.main_thread()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"\n=== {time.strftime('%H:%M:%S')} $ {' '.join(self.argv)}\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                user=self.user,
                group=self.group,
                extra_groups=[] if self.user is not None else None,
                start_new_session=True,
                preexec_fn=_die_with_parent if in_main_thread else None,  # noqa: PLW1509
            )

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> None:
        """Send `sig`, wait up to `timeout`, then SIGKILL the whole process group."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # stragglers forked by the server
        self._proc = None

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return f"(no log at {self.log_path})"
        return "\n".join(text.splitlines()[-lines:])

    def describe_exit(self) -> str:
        """State and log tail, for error messages."""
        state = f"is still running (pid {self.pid})" if self.running else "is not running"
        if self.returncode is not None:
            state = f"exited with {self.returncode}"
        return f"{self.name} {state}; log {self.log_path}:\n{self.log_tail()}"
