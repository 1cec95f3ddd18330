"""Which ledger each part of a spool belongs to, and the parts kept aside.

A spool directory outlives its process (an ``emptyDir`` survives container
restarts), and the restarted container may be pointed at another ledger (a new
Secret, a new database under the same name). Each process that opens the spool
starts a **run**: its rows begin in a fresh segment, and ``runs.json`` records the
run's first sequence number, its target (the DSN without password) and, once the
process has read it from the database, the ledger's identity
(:class:`~aegis.sidecar.ledger.identity.Identity`). The file is replaced
atomically (write, ``fsync``, ``rename``) before any row of the run is appended.

At the next start, rows of earlier runs bound to the ledger the sidecar now
writes to are replayed; rows of another ledger are **held**: their segments move
to ``held/<name>/`` with a ``binding.json``, are reported (log, the metric
``aegis_ledger_spool_held_rows``, ``aegis ledger spool``), never written here, and
replayed when the sidecar writes to their ledger again (or discarded by a person).
A run that never reached its database, or reached it before the database had an
id, replays into a ledger reached at the same target only. Rows spooled before runs existed (no
``runs.json``) replay as they always did.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

RUNS = "runs.json"
UNVERSIONED = "unversioned@"  # Identity.key of a ledger migrated before it had an id
HELD = "held"
BINDING = "binding.json"
_PARTIAL = ".partial-"  # a held set being moved (crash: moved back at the next open)


class HeldBusyError(RuntimeError):
    """The held set is being replayed by its sidecar right now."""


@dataclass(frozen=True, slots=True)
class Run:
    """One process's rows: sequence numbers from ``first`` (to the next run's)."""

    first: int
    target: str | None  # None: spooled before runs were recorded
    ledger: str | None  # Identity.key once known
    started: str = ""

    def as_json(self) -> dict[str, Any]:
        return {
            "first": self.first,
            "target": self.target,
            "ledger": self.ledger,
            "started": self.started,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Run:
        return cls(
            int(data["first"]), data.get("target"), data.get("ledger"), data.get("started", "")
        )

    def belongs_to(self, ledger: str, target: str) -> bool:
        """Rows of this run may be written to ``ledger`` (reached at ``target``)."""
        if self.target is None:
            return True  # spooled by a version that recorded no runs: as before
        if self.ledger is None or self.ledger.startswith(UNVERSIONED):
            # Never reached its database, or reached it before it had an id (a
            # ledger migrated since): known by where it was.
            return self.target == target
        return self.ledger == ledger


def now_text() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def write_json(path: Path, data: object) -> None:
    """Replace ``path`` atomically and durably."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, json.dumps(data, indent=1, sort_keys=True).encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    sync_dir(path.parent)


def sync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_runs(directory: Path) -> list[Run] | None:
    """The runs recorded in ``directory`` (``None``: no file, a spool of before)."""
    try:
        data = json.loads((directory / RUNS).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return []  # unreadable: every run unknown, held at the next open
    return sorted((Run.from_json(r) for r in data.get("runs", [])), key=lambda r: r.first)


def write_runs(directory: Path, runs: list[Run]) -> None:
    write_json(directory / RUNS, {"runs": [r.as_json() for r in runs]})


def run_of(runs: list[Run], seq: int) -> Run:
    """The run that wrote ``seq`` (runs sorted by ``first``)."""
    found = Run(0, None, None)
    for run in runs:
        if run.first <= seq:
            found = run
    return found


# -- held sets -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HeldSet:
    """Rows kept aside: what ledger they belong to, and what they add up to."""

    path: Path
    name: str
    ledger: str | None
    target: str | None
    held_at: str
    rows: int
    cost_usd: Decimal
    first_at: str
    last_at: str

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "ledger": self.ledger,
            "target": self.target,
            "held_at": self.held_at,
            "rows": self.rows,
            "cost_usd": str(self.cost_usd),
            "first_at": self.first_at,
            "last_at": self.last_at,
            "path": str(self.path),
        }


def hold(directory: Path, run: Run, segments: list[Path], reason: str) -> Path:
    """Move ``segments`` of ``run`` to a new held set; returns its directory."""
    root = directory / HELD
    root.mkdir(exist_ok=True)
    name = f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
    partial = root / f"{_PARTIAL}{name}"
    partial.mkdir()
    binding = {**run.as_json(), "held_at": now_text(), "reason": reason}
    write_json(partial / BINDING, binding)
    for segment in segments:
        os.replace(segment, partial / segment.name)
    sync_dir(partial)
    sync_dir(directory)
    final = root / name
    os.replace(partial, final)
    sync_dir(root)
    return final


def restore_partial(directory: Path) -> None:
    """A crash while holding: put the segments back (the run is decided again)."""
    root = directory / HELD
    if not root.is_dir():
        return
    for partial in root.glob(f"{_PARTIAL}*"):
        for segment in partial.glob("seg-*.spool"):
            os.replace(segment, directory / segment.name)
        shutil.rmtree(partial, ignore_errors=True)


def held_dirs(directory: Path) -> list[Path]:
    root = directory / HELD
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def read_binding(path: Path) -> dict[str, Any]:
    try:
        data = json.loads((path / BINDING).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def held_run(path: Path) -> Run:
    data = read_binding(path)
    return Run(0, data.get("target"), data.get("ledger"), data.get("started", ""))


def held_segments(path: Path) -> list[Path]:
    return sorted(path.glob("seg-*.spool"))


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Exclusive use of one held set (replay or discard), never waiting."""
    fd = os.open(path / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise HeldBusyError(f"{path} is being replayed") from None
        yield
    finally:
        os.close(fd)


def remove_held(path: Path) -> None:
    """Delete a held set (its rows are written, or a person discarded them)."""
    gone = path.with_name(f".gone-{path.name}")
    os.replace(path, gone)  # atomic: never half a set left to replay
    shutil.rmtree(gone, ignore_errors=True)
    sync_dir(path.parent)
