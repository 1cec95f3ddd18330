"""Binding a store's spool to the ledger it writes to (see :mod:`.spool_binding`).

:class:`SpoolBinder` is the store's half of it: once the ledger's identity is read,
it binds this process's run, holds earlier runs of other ledgers aside (and says
which spooled sequence numbers that removed from the replay), finds held sets that
belong here (to replay) and reports the ones that do not (log and a gauge).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from . import spool_binding as binding
from .identity import Identity
from .spool import Spool, Spooled, describe_held, held_rows

log = logging.getLogger(__name__)


class SpoolBinder:
    """Which of a spool's rows may be written to the ledger the store reached."""

    def __init__(self, spool: Spool | None, target: str) -> None:
        self.spool = spool
        self.target = target
        self.identity: Identity | None = None
        self.held_rows = 0  # rows kept aside for other ledgers (gauge)
        self.held_sets = 0
        self._seen: tuple[str, ...] = ()

    @property
    def ledger_id(self) -> str | None:
        return None if self.identity is None else self.identity.ledger_id

    def adopt(self, identity: Identity) -> list[tuple[int, int]]:
        """Bind to ``identity``; returns the sequence ranges ``[first, end)`` of
        earlier runs just held aside (their rows must leave the replay queue)."""
        self.identity = identity
        spool = self.spool
        if spool is None or not spool.runs:
            return []
        key = identity.key
        spool.bind(key)
        held: list[tuple[int, int]] = []
        for run in list(spool.runs[:-1]):
            if not run.belongs_to(key, self.target):
                end = spool.runs[spool.runs.index(run) + 1].first
                spool.hold_run(run, f"spooled for {run.ledger or run.target}, not {key}")
                held.append((run.first, end))
        return held

    def replayable(self) -> list[Path]:
        """Held sets that belong to the bound ledger (A again after B)."""
        if self.spool is None or self.identity is None:
            return []
        key = self.identity.key
        return [
            path
            for path in binding.held_dirs(self.spool.directory)
            if binding.held_run(path).belongs_to(key, self.target)
        ]

    async def replay_held(self, write: Callable[[list[Spooled]], Awaitable[None]]) -> int:
        """Write the held sets that belong to the bound ledger (A, then B, then A),
        each then deleted; returns how many rows they held."""
        replayed = 0
        for path in self.replayable():
            try:
                with binding.locked(path):
                    rows = list(held_rows(path))
                    log.warning("ledger spool: replaying %d held rows from %s", len(rows), path)
                    await write(rows)
                    binding.remove_held(path)
                    replayed += len(rows)
            except binding.HeldBusyError:
                continue  # being discarded (`aegis ledger spool --discard`) right now
        return replayed

    def refresh(self, *, force: bool = False) -> None:
        """Recount the rows held for other ledgers (when the held sets changed)."""
        if self.spool is None:
            return
        dirs = binding.held_dirs(self.spool.directory)
        names = tuple(p.name for p in dirs)
        if names == self._seen and not force:
            return
        self._seen = names
        foreign = [p for p in dirs if p not in self.replayable()]
        described = [describe_held(p) for p in foreign]
        self.held_sets = len(described)
        self.held_rows = sum(d.rows for d in described)
        for held in described if force else ():
            log.error(
                "ledger spool: %d rows (%s USD) spooled for ledger %s (target %s) are kept "
                "aside in %s: this sidecar writes to ledger %s, where they are never written "
                "(inspect or discard them: aegis ledger spool)",
                held.rows,
                held.cost_usd,
                held.ledger or "never reached",
                held.target,
                held.path,
                self.identity.key if self.identity else "?",
            )


def inventory(directory: Path) -> dict[str, Any]:
    """What ``aegis ledger spool`` shows: the runs with rows still on disk (rows not
    yet confirmed by their ledger) and the held sets (rows of another ledger)."""
    runs = binding.read_runs(directory) or []
    return {
        "directory": str(directory),
        "runs": [run.as_json() for run in runs],
        "held": [describe_held(path).as_json() for path in binding.held_dirs(directory)],
    }


def discard(directory: Path, name: str) -> int:
    """Delete held set ``name`` (its rows are never written anywhere); returns how
    many rows it held. Refused while its sidecar is replaying it."""
    path = directory / binding.HELD / name
    if name.startswith(".") or "/" in name or not path.is_dir():
        raise ValueError(f"no held set {name!r} in {directory}")
    with binding.locked(path):
        rows = describe_held(path).rows
        binding.remove_held(path)
    log.warning("ledger spool: held set %s discarded (%d rows)", path, rows)
    return rows
