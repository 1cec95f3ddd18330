"""A throwaway PostgreSQL server from the installed binaries, for one test session.

initdb runs into a fresh temp dir with trust auth for a superuser named
``postgres``, the server listens on a random 127.0.0.1 port, and durability is off
(fsync, full_page_writes) because the data dies with the session. PostgreSQL
refuses to run as root, so when the tests run as root the server runs as the
``postgres`` system user if one exists, otherwise as ``nobody``.

The server can be stopped and started again on the same port and data dir, which
is how tests simulate a database outage.
"""

from __future__ import annotations

import glob
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import uuid
from pathlib import Path

from tests.controlplane.procs import ServerProcess, free_port, port_is_free, wait_until

SUPERUSER = "postgres"


class PostgresError(RuntimeError):
    """The server could not be set up or started; the message has the log tail."""


def find_bin_dir() -> Path:
    """``$AEGIS_PG_BIN``, else the directory of ``initdb`` on PATH, else Debian's newest."""
    configured = os.environ.get("AEGIS_PG_BIN")
    if configured:
        if not (Path(configured) / "initdb").exists():
            raise PostgresError(f"AEGIS_PG_BIN={configured} has no initdb")
        return Path(configured)
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).resolve().parent
    candidates = glob.glob("/usr/lib/postgresql/*/bin/initdb")
    if candidates:
        newest = max(candidates, key=lambda p: int(re.sub(r"\D", "", p.split("/")[4]) or 0))
        return Path(newest).parent
    raise PostgresError("PostgreSQL binaries not found (no initdb); run `make postgres`")


def sqlalchemy_url(url: str, driver: str = "asyncpg") -> str:
    """``postgresql://...`` -> ``postgresql+asyncpg://...`` for SQLAlchemy's async engine."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.split("+")[0] not in {"postgresql", "postgres"}:
        raise ValueError(f"not a PostgreSQL URL: {url!r}")
    return f"postgresql+{driver}://{rest}"


def server_user() -> tuple[int | None, int | None]:
    """(uid, gid) to run the server as; (None, None) means the current user."""
    if os.geteuid() != 0:
        return None, None
    for name in ("postgres", "nobody"):
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        return entry.pw_uid, entry.pw_gid
    raise PostgresError("running as root and neither a `postgres` nor a `nobody` user exists")


class PostgresServer:
    """One postgres process; `dsn` points at its `postgres` database as superuser."""

    def __init__(
        self, bin_dir: Path | None = None, port: int | None = None, log_dir: Path | None = None
    ) -> None:
        self.bin_dir = bin_dir or find_bin_dir()
        self.port = port or free_port()
        self.run_dir = Path(tempfile.mkdtemp(prefix="aegis-pg-"))
        self.data_dir = self.run_dir / "data"
        # The log may live outside run_dir (e.g. in pytest's tmp dir) to outlive the data.
        self.log_path = (log_dir or self.run_dir) / "postgres.log"
        self._uid, self._gid = server_user()
        if self._uid is not None:
            os.chown(self.run_dir, self._uid, self._gid or -1)
        self._process = ServerProcess(
            "postgres",
            [],
            self.log_path,
            user=self._uid,
            group=self._gid,
            cwd=self.run_dir,
            env={"PATH": os.environ.get("PATH", ""), "LC_ALL": "C"},
        )

    @classmethod
    def launch(
        cls, bin_dir: Path | None = None, log_dir: Path | None = None, attempts: int = 3
    ) -> PostgresServer:
        """initdb + start, retrying on another port if a random port was grabbed meanwhile."""
        server = cls(bin_dir, log_dir=log_dir)
        for attempt in range(attempts):
            try:
                if attempt == 0:
                    server.init()
                server.start()
                return server
            except OSError as error:  # e.g. a binary missing from bin_dir
                server.destroy()
                raise PostgresError(
                    f"cannot run PostgreSQL from {server.bin_dir}: {error}"
                ) from None
            except PostgresError as error:
                if "could not bind" not in str(error) or attempt == attempts - 1:
                    server.destroy()
                    raise
                server.port = free_port()
        raise AssertionError("unreachable")

    def _argv(self) -> list[str]:
        return [
            str(self.bin_dir / "postgres"),
            *("-D", str(self.data_dir), "-p", str(self.port), "-k", str(self.run_dir)),
            *("-c", "listen_addresses=127.0.0.1", "-c", "max_connections=300"),
            *("-c", "fsync=off", "-c", "full_page_writes=off"),
            *("-c", "synchronous_commit=off", "-c", "logging_collector=off"),
        ]

    # -- connection strings -------------------------------------------------
    def url(self, database: str = "postgres") -> str:
        """libpq URL for `database` on this server."""
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    @property
    def dsn(self) -> str:
        return self.url()

    # -- lifecycle ------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._process.running

    @property
    def pid(self) -> int | None:
        """The server's main process (for CPU accounting)."""
        return self._process.pid

    def init(self) -> None:
        """initdb into the temp dir (done once; the data survives stop/start)."""
        done = subprocess.run(
            [
                str(self.bin_dir / "initdb"),
                *("-D", str(self.data_dir), "-U", SUPERUSER, "--auth=trust"),
                *("--encoding=UTF8", "--locale=C", "--no-sync", "--no-instructions"),
            ],
            capture_output=True,
            text=True,
            user=self._uid,
            group=self._gid,
            extra_groups=[] if self._uid is not None else None,
            cwd=self.run_dir,
            env={"PATH": os.environ.get("PATH", ""), "LC_ALL": "C"},
            check=False,
        )
        if done.returncode != 0:
            raise PostgresError(f"initdb failed ({done.returncode}):\n{done.stdout}{done.stderr}")

    def start(self, timeout: float = 30.0) -> None:
        """Start on `self.port` and wait until it accepts connections."""
        if self.running:
            return
        if not port_is_free(self.port):
            raise PostgresError(f"port {self.port} is taken; cannot (re)start postgres there")
        self._process.argv = self._argv()
        self._process.start()
        try:
            wait_until(self._ready, timeout=timeout, what="postgres to accept connections")
        except (TimeoutError, PostgresError) as error:
            exit_report = self._process.describe_exit()
            self._process.stop(signal.SIGQUIT, timeout=5)
            raise PostgresError(f"{error}\n{exit_report}") from None

    def _ready(self) -> bool:
        if not self._process.running:
            raise PostgresError("postgres exited during startup")
        done = subprocess.run(
            [str(self.bin_dir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)],
            capture_output=True,
            check=False,
        )
        return done.returncode == 0

    def stop(self, timeout: float = 30.0) -> None:
        """Fast shutdown (SIGINT: roll back open transactions, disconnect clients)."""
        self._process.stop(signal.SIGINT, timeout=timeout)

    def restart(self) -> None:
        self.stop()
        self.start()

    def destroy(self) -> None:
        """Stop and delete the data directory."""
        self.stop()
        shutil.rmtree(self.run_dir, ignore_errors=True)

    def log_tail(self, lines: int = 30) -> str:
        return self._process.log_tail(lines)

    # -- administration ---------------------------------------------------------
    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run SQL through psql (autocommit, stops on the first error) and return stdout."""
        psql = str(self.bin_dir / "psql")
        done = subprocess.run(
            [psql, "-XAt", "-v", "ON_ERROR_STOP=1", "-d", self.url(database), "-c", sql],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise PostgresError(f"psql {sql!r} failed: {done.stderr.strip()}")
        return done.stdout.strip()

    def create_database(self, prefix: str = "t") -> str:
        """Create a fresh empty database and return its URL."""
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        self.psql(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def version(self) -> str:
        done = subprocess.run(
            [str(self.bin_dir / "postgres"), "--version"],
            capture_output=True,
            text=True,
            check=False,
        )
        return done.stdout.strip()
