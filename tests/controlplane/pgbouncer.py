"""A throwaway PgBouncer in transaction pooling mode in front of a test PostgreSQL.

Debian's ``pgbouncer`` (``make pgbouncer``), listening on a random 127.0.0.1
port. Every database of the server is reachable under its own name (``* =``);
clients log in as any role of the server: PgBouncer looks the role up with its
``auth_query`` (as the ``postgres`` superuser) and, like the test server, trusts
127.0.0.1. ``pool_mode = transaction``: a client holds a server connection only
for the duration of a transaction (or of one statement in autocommit), the mode
that lets a thousand sidecars share a few server connections and the one that
breaks named prepared statements.

PgBouncer refuses to run as root; it then runs as the user the server runs as.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

from tests.controlplane.postgres import SUPERUSER, PostgresServer, server_user
from tests.controlplane.procs import (
    PortTaken,
    ServerProcess,
    port_is_free,
    start_on_free_ports,
    wait_until,
)


class PgBouncerError(RuntimeError):
    """PgBouncer is missing or did not start; the message has the log tail."""


def find_pgbouncer() -> Path:
    """``$AEGIS_PGBOUNCER``, else ``pgbouncer`` on PATH, else Debian's /usr/sbin one."""
    for candidate in (
        os.environ.get("AEGIS_PGBOUNCER"),
        shutil.which("pgbouncer"),
        "/usr/sbin/pgbouncer",
    ):
        if candidate and os.access(candidate, os.X_OK):
            return Path(candidate)
    raise PgBouncerError("pgbouncer not found; run `make pgbouncer`")


class PgBouncerServer:
    """One pgbouncer process in front of ``postgres``."""

    def __init__(
        self,
        postgres: PostgresServer,
        *,
        pool_size: int = 20,
        max_clients: int = 2000,
        log_dir: Path | None = None,
    ) -> None:
        self.postgres = postgres
        self.binary = find_pgbouncer()
        self.port = 0  # chosen by the first start()
        self.pool_size = pool_size
        self.max_clients = max_clients
        self.run_dir = Path(tempfile.mkdtemp(prefix="aegis-pgbouncer-"))
        self.log_path = (log_dir or self.run_dir) / "pgbouncer.log"
        self._logged = 0  # the log's size when the last start began
        uid, gid = server_user()
        if uid is not None:
            os.chown(self.run_dir, uid, gid or -1)
        self._process = ServerProcess(
            "pgbouncer",
            [str(self.binary), str(self.run_dir / "pgbouncer.ini")],
            self.log_path,
            user=uid,
            group=gid,
            cwd=self.run_dir,
            env={"PATH": os.environ.get("PATH", ""), "LC_ALL": "C"},
        )

    @classmethod
    def launch(cls, postgres: PostgresServer, **kwargs: object) -> PgBouncerServer:
        server = cls(postgres, **kwargs)  # type: ignore[arg-type]
        try:
            server.start()
        except BaseException:
            server.destroy()
            raise
        return server

    def _write_config(self) -> None:
        files = {
            "pgbouncer.ini": f"""
[databases]
* = host=127.0.0.1 port={self.postgres.port}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {self.port}
unix_socket_dir =
pool_mode = transaction
auth_type = hba
auth_hba_file = {self.run_dir}/hba.conf
auth_file = {self.run_dir}/users.txt
auth_user = {SUPERUSER}
admin_users = {SUPERUSER}
stats_users = {SUPERUSER}
default_pool_size = {self.pool_size}
max_client_conn = {self.max_clients}
max_db_connections = {self.pool_size}
server_login_retry = 1
server_check_delay = 0
ignore_startup_parameters = extra_float_digits
""",
            "hba.conf": "host all all 127.0.0.1/32 trust\n",
            "users.txt": f'"{SUPERUSER}" ""\n',
        }
        uid, gid = server_user()
        for name, text in files.items():
            path = self.run_dir / name
            path.write_text(text)
            if uid is not None:
                os.chown(path, uid, gid or -1)

    # -- connection strings -------------------------------------------------
    def url(self, database: str = "postgres", user: str = SUPERUSER) -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}"

    def via(self, url: str) -> str:
        """``url`` (a libpq URL of the test server) through this PgBouncer."""
        direct = f"@127.0.0.1:{self.postgres.port}/"
        if direct not in url:
            raise ValueError(f"not a URL of the test server: {url}")
        return url.replace(direct, f"@127.0.0.1:{self.port}/", 1)

    # -- lifecycle ------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._process.running

    @property
    def pid(self) -> int | None:
        """The server's main process (for CPU accounting)."""
        return self._process.pid

    def start(self, timeout: float = 20.0) -> None:
        """The first time on a free port (another one when that is taken before pgbouncer
        binds it); after a stop, on the same port again."""
        if self.running:
            return
        try:
            if self.port == 0:
                start_on_free_ports(
                    self._start_on,
                    1,
                    lambda _: self._listening(),
                    timeout=timeout,
                    what="pgbouncer to listen",
                )
                return
            if not port_is_free(self.port):
                raise PgBouncerError(f"port {self.port} is taken")
            self._start_on([self.port])
            wait_until(self._ready, timeout=timeout, what="pgbouncer to listen")
        except (TimeoutError, AssertionError, PortTaken, PgBouncerError) as error:
            self._process.stop(signal.SIGKILL, timeout=5)
            raise PgBouncerError(f"{error}\n{self.log_tail()}") from None

    def _start_on(self, ports: list[int]) -> ServerProcess:
        (self.port,) = ports
        self._write_config()
        self._logged = self.log_path.stat().st_size if self.log_path.exists() else 0
        try:
            self._process.start()
        except OSError as error:
            raise PgBouncerError(f"cannot run {self.binary}: {error}") from None
        return self._process

    def _listening(self) -> bool:
        """pgbouncer itself says it listens on the port (that the port is taken is not
        enough: another process may have taken it)."""
        with self.log_path.open("rb") as log:
            log.seek(self._logged)
            return f"listening on 127.0.0.1:{self.port}".encode() in log.read()

    def _ready(self) -> bool:
        if not self._process.running:
            raise PgBouncerError(f"pgbouncer exited during startup\n{self.log_tail()}")
        return self._listening()

    def stop(self) -> None:
        self._process.stop(signal.SIGINT, timeout=10)  # SIGINT: safe shutdown

    def destroy(self) -> None:
        self._process.stop(signal.SIGTERM, timeout=10)
        shutil.rmtree(self.run_dir, ignore_errors=True)

    def log_tail(self, lines: int = 30) -> str:
        return self._process.log_tail(lines)

    # -- the admin console --------------------------------------------------------
    def show(self, what: str) -> list[dict[str, str]]:
        """``SHOW <what>`` on the admin console (``POOLS``, ``SERVERS``, ``STATS``…)
        as rows of column -> text."""
        psql = str(self.postgres.bin_dir / "psql")
        done = subprocess.run(
            [psql, "-XA", "-F", "\t", "-d", self.url("pgbouncer"), "-c", f"SHOW {what}"],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise PgBouncerError(f"SHOW {what} failed: {done.stderr.strip()}")
        lines = [line for line in done.stdout.splitlines() if line and not line.startswith("(")]
        header = lines[0].split("\t")
        return [dict(zip(header, line.split("\t"), strict=False)) for line in lines[1:]]

    def server_connections(self, database: str | None = None) -> int:
        """Server connections PgBouncer holds now (to ``database``, or to all)."""
        return sum(
            1 for row in self.show("SERVERS") if database is None or row.get("database") == database
        )
