"""The ledger spool: a local, append-only copy of rows not yet in the database.

Why: the ledger writer batches rows in memory, and memory dies with the process
(SIGKILL, OOM, a node drain) or overflows during a long database outage. Every
row is therefore appended here *before* its response completes, and deleted only
once the database has committed it; a restarted sidecar replays what is left
(``INSERT … ON CONFLICT (request_id) DO NOTHING`` makes a replay of rows that
did reach the database harmless).

Cost on the request path: one JSON line and one ``write(2)`` per row (about
10 µs; see ``tests/bench``), no ``await``. The write goes straight to the kernel,
so a killed process loses nothing it had answered; ``fdatasync`` runs in a
thread every ``sync_interval`` seconds for everything written since (group
commit), so a power cut loses at most that window.

Format: segment files ``seg-<first seq>.spool``; one line per row:
``<seq>\\t<crc32 of "<seq>\\t<json>", hex>\\t<json>\\n`` where the JSON array
(:func:`encode_body`) holds the budget keys the row is charged to
(``Scope/namespace/name``, comma-separated), then the ledger columns in model
order (money as decimal strings, instants in ISO 8601). The checksum covers the
sequence number too, so a damaged digit cannot replay a row under another number.
A torn or corrupt line (power cut in the middle of a write, a flipped byte) fails
its checksum and is skipped alone: every other line carries its own checksum and
is replayed, in sequence order.

One process per spool directory: an exclusive ``flock`` on ``lock`` refuses a
second sidecar with the same identity (it would also share its leases).

Which ledger each process's rows belong to is recorded beside the segments
(``runs.json``), and rows of another ledger are kept aside: see
:mod:`.spool_binding`.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from operator import attrgetter
from pathlib import Path
from typing import Any

from ..jsonbytes import compact_json
from . import spool_binding as binding
from .records import COLUMNS, LedgerRecord
from .spool_binding import HeldSet, Run

log = logging.getLogger(__name__)

_PREFIX = "seg-"
_SUFFIX = ".spool"
# Nullable columns appended by later migrations (0004: the privacy audit, three;
# 0006: workload and ServiceAccount, two): a row spooled by an earlier version lacks
# them and replays with NULLs.
ADDED_LATER = 5
_CREATED = COLUMNS.index("created_at")
_COST = COLUMNS.index("cost_usd")


class SpoolBusyError(RuntimeError):
    """Another live process holds this spool directory."""


@dataclass(frozen=True, slots=True)
class Spooled:
    """One row read back from the spool."""

    seq: int
    record: LedgerRecord
    budgets: str
    body: bytes  # as encode_body made it


_VALUES = attrgetter(*COLUMNS)


def encode_body(record: LedgerRecord, budgets: str) -> bytes:
    """A row as a compact JSON array: the budgets it is charged to, then the ledger
    columns in model order. The same bytes go to the spool and, batched, to
    ``aegis.ledger_write`` (one JSON parameter: no per-value encoding work).
    Enums are ``str`` subclasses and serialise as their values; only the instant
    and the money need converting."""
    values: list[Any] = [budgets, *_VALUES(record)]
    values[_CREATED + 1] = values[_CREATED + 1].isoformat()
    values[_COST + 1] = str(values[_COST + 1])
    return compact_json(values)


def encode(seq: int, body: bytes) -> bytes:
    """One spool line: sequence, checksum, body (see the module docstring)."""
    head = b"%d\t" % seq
    return b"%s%08x\t%s\n" % (head, zlib.crc32(body, zlib.crc32(head)), body)


def decode(line: bytes) -> Spooled | None:
    """The row of a spool line, or ``None`` when it is torn or corrupt."""
    try:
        seq_text, crc_text, body = line.rstrip(b"\n").split(b"\t", 2)
        if int(crc_text, 16) != zlib.crc32(body, zlib.crc32(seq_text + b"\t")):
            return None
        values = json.loads(body)
        budgets, columns = values[0], values[1:]
        if not len(COLUMNS) - ADDED_LATER <= len(columns) <= len(COLUMNS):
            return None
        columns += [None] * (len(COLUMNS) - len(columns))  # spooled before an upgrade
        columns[_CREATED] = datetime.fromisoformat(columns[_CREATED])
        columns[_COST] = Decimal(columns[_COST])
        record = LedgerRecord(**dict(zip(COLUMNS, columns, strict=True)))
        return Spooled(int(seq_text), record, str(budgets), body)
    except (ValueError, TypeError, IndexError):
        return None


class _Segment:
    __slots__ = ("fd", "first", "last", "path", "size")

    def __init__(self, path: Path, first: int, fd: int | None = None) -> None:
        self.path = path
        self.first = first
        self.last = first - 1  # no row yet
        self.size = 0
        self.fd = fd


class Spool:
    """Append rows, drop them once committed, read back what survived a crash."""

    def __init__(
        self,
        directory: Path,
        *,
        segment_bytes: int = 4 * 1024 * 1024,
        sync_interval: float = 0.05,
    ) -> None:
        self.directory = directory
        self._segment_bytes = segment_bytes
        self._sync_interval = sync_interval
        self._closed_segments: list[_Segment] = []
        self._active: _Segment | None = None
        self._to_close: list[int] = []  # fds of rotated segments, closed after a sync
        self._lock_fd: int | None = None
        self._next_seq = 1
        self._dirty = False
        self._new_entry = False  # a segment created since the last sync: sync the directory
        self._task: asyncio.Task[None] | None = None
        self.rows_appended = 0
        self.bytes_appended = 0
        self.syncs = 0
        self.corrupt_lines = 0
        self.runs: list[Run] = []  # recorded runs, this process's last (open(target=...))

    # -- lifecycle ---------------------------------------------------------------

    def open(self, target: str | None = None) -> list[Spooled]:
        """Lock the directory and return the rows left by a previous process.

        With ``target`` (where this process writes: the DSN without password) the
        process's rows start a new run, recorded before any is appended."""
        self.directory.mkdir(parents=True, exist_ok=True)
        lock_fd = os.open(self.directory / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(lock_fd)
            raise SpoolBusyError(f"spool {self.directory} is used by another process") from None
        self._lock_fd = lock_fd
        binding.restore_partial(self.directory)
        rows: list[Spooled] = []
        for path in sorted(self.directory.glob(f"{_PREFIX}*{_SUFFIX}")):
            segment = _Segment(path, int(path.name[len(_PREFIX) : -len(_SUFFIX)]))
            for row in self._read(path):
                rows.append(row)
                segment.last = max(segment.last, row.seq)
            segment.size = path.stat().st_size
            if segment.last < segment.first:  # nothing readable in it
                path.unlink()
                continue
            self._closed_segments.append(segment)
            self._next_seq = max(self._next_seq, segment.last + 1, segment.first)
        if target is not None:
            self._start_run(target, rows)
        self._open_segment()
        return rows

    def _start_run(self, target: str, rows: list[Spooled]) -> None:
        recorded = binding.read_runs(self.directory)
        if recorded is None:  # a spool of before runs were recorded
            recorded = [Run(0, None, None)] if rows else []
        # Keep the runs that still have rows on disk.
        firsts = [s.first for s in self._closed_segments]
        kept = [
            run
            for index, run in enumerate(recorded)
            if any(
                run.first <= first
                and (index + 1 == len(recorded) or first < recorded[index + 1].first)
                for first in firsts
            )
        ]
        self.runs = [*kept, Run(self._next_seq, target, None, binding.now_text())]
        binding.write_runs(self.directory, self.runs)

    # -- which ledger the rows belong to -------------------------------------------

    def bind(self, ledger: str) -> None:
        """This process's run writes to ``ledger`` (an ``Identity.key``)."""
        if not self.runs or self.runs[-1].ledger == ledger:
            return
        current = self.runs[-1]
        self.runs[-1] = Run(current.first, current.target, ledger, current.started)
        binding.write_runs(self.directory, self.runs)

    def run_of(self, seq: int) -> Run:
        return binding.run_of(self.runs, seq)

    def hold_run(self, run: Run, reason: str) -> Path | None:
        """Move the segments of an earlier ``run`` to a held set (see
        :mod:`.spool_binding`); returns its directory (``None``: nothing on disk)."""
        index = self.runs.index(run)
        if index == len(self.runs) - 1:
            raise ValueError("the current run cannot be held")
        end = self.runs[index + 1].first
        moving = [s for s in self._closed_segments if run.first <= s.first < end]
        held = None
        if moving:
            for segment in moving:
                if segment.fd is not None:
                    self._to_close.append(segment.fd)
                    segment.fd = None
            held = binding.hold(self.directory, run, [s.path for s in moving], reason)
            self._closed_segments = [s for s in self._closed_segments if s not in moving]
        self.runs.pop(index)
        binding.write_runs(self.directory, self.runs)
        return held

    def start(self) -> None:
        """Start the background ``fdatasync`` loop (needs a running event loop)."""
        if self._task is None:
            self._task = asyncio.create_task(self._sync_loop(), name="aegis-spool-sync")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._sync_now()
        if self._active is not None and self._active.fd is not None:
            os.close(self._active.fd)
            self._active.fd = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # -- the request path --------------------------------------------------------

    def append(self, body: bytes) -> int:
        """Write one row (:func:`encode_body`) to the kernel, no ``await``; returns
        its sequence number."""
        segment = self._active
        if segment is None or segment.fd is None:
            raise RuntimeError("spool is not open")
        seq = self._next_seq
        line = encode(seq, body)
        os.write(segment.fd, line)  # a regular file: the whole line or an error
        self._next_seq = seq + 1
        segment.last = seq
        segment.size += len(line)
        self._dirty = True
        self.rows_appended += 1
        self.bytes_appended += len(line)
        if segment.size >= self._segment_bytes:
            self._rotate()
        return seq

    # -- after the database committed ----------------------------------------------

    def committed(self, seq: int, *, compact: bool = False) -> None:
        """Every row up to ``seq`` is in the database: delete segments holding only those.

        ``compact`` also recycles a fully committed active segment however small
        (at a clean shutdown, so that the next start has nothing to replay).
        """
        keep = []
        for segment in self._closed_segments:
            if segment.last <= seq:
                if segment.fd is not None:
                    self._to_close.append(segment.fd)
                with contextlib.suppress(FileNotFoundError):
                    segment.path.unlink()
            else:
                keep.append(segment)
        self._closed_segments = keep
        active = self._active
        # A fully committed active segment is recycled once it is worth a file.
        threshold = 1 if compact else self._segment_bytes // 16
        if active is not None and active.last <= seq and active.size >= threshold:
            self._rotate()
            self.committed(seq)

    def rows_from(self, seq: int) -> Iterator[Spooled]:
        """Rows with sequence >= ``seq`` still on disk, in order (after a spill).

        Earlier lines are skipped by their sequence prefix, without decoding them.
        """
        for segment in [*self._closed_segments, self._active]:
            if segment is not None and segment.last >= seq:
                yield from self._read(segment.path, seq)

    @property
    def next_seq(self) -> int:
        return self._next_seq

    @property
    def size_bytes(self) -> int:
        active = self._active.size if self._active is not None else 0
        return sum(s.size for s in self._closed_segments) + active

    # -- internals -----------------------------------------------------------------

    def _read(self, path: Path, since: int = 0) -> Iterator[Spooled]:
        last = since - 1
        with path.open("rb") as handle:
            for line in handle:
                if since and line.endswith(b"\n"):
                    head = line.split(b"\t", 1)[0]
                    if head.isdigit() and int(head) < since:
                        continue
                row = decode(line) if line.endswith(b"\n") else None
                if row is None:
                    self.corrupt_lines += 1
                    log.warning("spool %s: torn or corrupt line skipped", path)
                    continue
                if row.seq <= last:  # appended in order: an older number is not ours twice
                    continue
                last = row.seq
                yield row

    def _open_segment(self) -> None:
        path = self.directory / f"{_PREFIX}{self._next_seq:012d}{_SUFFIX}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._active = _Segment(path, self._next_seq, fd)
        self._dirty = self._new_entry = True  # its directory entry needs a sync too

    def _rotate(self) -> None:
        if self._active is not None:
            self._closed_segments.append(self._active)
        self._open_segment()

    def _fds(self) -> tuple[list[int], list[int]]:
        """(fds of rotated segments not yet closed, fd of the active segment)."""
        rotated = [s.fd for s in self._closed_segments if s.fd is not None]
        active = self._active
        return rotated, [active.fd] if active is not None and active.fd is not None else []

    def _after_sync(self, rotated: list[int]) -> None:
        """Rotated segments are complete and on disk: close them, and deleted ones."""
        for segment in self._closed_segments:
            if segment.fd is not None and segment.fd in rotated:
                os.close(segment.fd)
                segment.fd = None
        fds, self._to_close = self._to_close, []
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)

    def _sync_now(self) -> None:
        rotated, active = self._fds()
        directory, self._new_entry = (self.directory if self._new_entry else None), False
        with contextlib.suppress(OSError):
            _sync_fds([*rotated, *active], directory)
        self._after_sync(rotated)
        self.syncs += 1

    async def _sync_loop(self) -> None:
        while True:
            await asyncio.sleep(self._sync_interval)
            if not self._dirty and not self._to_close:
                continue
            self._dirty = False
            rotated, active = self._fds()
            directory, self._new_entry = (self.directory if self._new_entry else None), False
            try:
                # fdatasync releases the GIL: the loop keeps serving meanwhile.
                await asyncio.to_thread(_sync_fds, [*rotated, *active], directory)
            except OSError:
                self._dirty, self._new_entry = True, self._new_entry or directory is not None
                log.exception("spool fdatasync failed; retrying")
                continue
            self.syncs += 1
            self._after_sync(rotated)


def held_rows(path: Path) -> Iterator[Spooled]:
    """The rows of a held set, in order (a torn line ends its segment, as at open)."""
    reader = Spool(path)
    for segment in binding.held_segments(path):
        yield from reader._read(segment)


def describe_held(path: Path) -> HeldSet:
    """What a held set holds: its binding and its rows' count, cost and time span."""
    data = binding.read_binding(path)
    count, cost, first, last = 0, Decimal(0), "", ""
    for row in held_rows(path):
        count += 1
        cost += row.record.cost_usd
        at = row.record.created_at.isoformat()
        first = min(first, at) if first else at
        last = max(last, at)
    return HeldSet(
        path,
        path.name,
        data.get("ledger"),
        data.get("target"),
        str(data.get("held_at", "")),
        count,
        cost,
        first,
        last,
    )


def _sync_fds(fds: list[int], directory: Path | None) -> None:
    """Data of every segment, then the directory when it has new segment files' entries
    (a deleted segment need not be durable: its rows are committed, and replaying them
    again is skipped by request id)."""
    for fd in fds:
        os.fdatasync(fd)
    if directory is None:
        return
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
