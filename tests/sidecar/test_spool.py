"""The ledger spool: format, torn writes, segments, locking, crash replay, spill."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from aegis.sidecar.ledger.models import Arm, Status
from aegis.sidecar.ledger.spool import Spool, SpoolBusyError, decode, encode, encode_body
from aegis.sidecar.ledger.store import LedgerStore
from tests.sidecar.ledger_helpers import record, sqlite_url
from tests.sidecar.shared_helpers import poll_until

ROOT = Path(__file__).resolve().parents[2]


def segments(directory: Path) -> list[Path]:
    return sorted(directory.glob("seg-*.spool"))


def tear(path: Path, data: bytes) -> None:
    with path.open("ab") as handle:
        handle.write(data)


def test_a_row_survives_the_format_exactly() -> None:
    original = record(
        7,
        created_at=datetime(2026, 11, 3, 13, 0, 0, 250_000, tzinfo=timezone(timedelta(hours=1))),
        rule=None,
        arm=Arm.CANDIDATE,
        status=Status.CANCELLED,
        model="qwen-plus ✓ «quoted» \t tab",
        cost_usd=Decimal("0.000123"),
        ttft_ms=None,
        fallback_reason="dashscope:budget_unavailable",
    )
    row = decode(encode(42, encode_body(original, "dash,total")))
    assert row is not None
    assert (row.seq, row.budgets) == (42, "dash,total")
    assert row.record == original
    assert row.record.created_at.utcoffset() == timedelta(hours=1)


def test_torn_and_corrupt_lines_are_refused() -> None:
    line = encode(1, encode_body(record(1), ""))
    assert decode(line[:-10]) is None  # torn
    assert decode(line.replace(b"rag-api", b"rag-apX")) is None  # checksum
    assert decode(b"garbage\n") is None


async def test_rows_left_behind_are_returned_in_order_and_a_torn_tail_is_skipped(
    tmp_path: Path,
) -> None:
    spool = Spool(tmp_path, segment_bytes=2000)  # a few rows per segment
    spool.open()
    for i in range(20):
        assert spool.append(encode_body(record(i), "")) == i + 1
    await spool.aclose()
    tear(segments(tmp_path)[-1], b'21\t0000\t["half a row')  # a power cut mid-write
    again = Spool(tmp_path)
    rows = again.open()
    assert [r.seq for r in rows] == list(range(1, 21))
    assert [r.record.request_id for r in rows] == [f"req-{i:06d}" for i in range(20)]
    assert again.corrupt_lines == 1
    assert again.append(encode_body(record(99), "")) == 21  # numbering goes on
    await again.aclose()


async def test_committed_segments_are_deleted(tmp_path: Path) -> None:
    spool = Spool(tmp_path, segment_bytes=1500)
    spool.open()
    spool.start()
    for i in range(30):
        spool.append(encode_body(record(i), ""))
    assert len(segments(tmp_path)) > 3
    spool.committed(15)
    assert min(r.seq for r in spool.rows_from(0)) <= 16  # the segment holding 16 stays
    assert [r.seq for r in spool.rows_from(25)] == [25, 26, 27, 28, 29, 30]
    spool.committed(30, compact=True)
    # The sync loop closes and deletes the rotated files.
    await poll_until(lambda: segments(tmp_path) == [tmp_path / "seg-000000000031.spool"])
    assert spool.size_bytes == 0
    await spool.aclose()


async def test_one_process_per_spool(tmp_path: Path) -> None:
    first = Spool(tmp_path)
    first.open()
    with pytest.raises(SpoolBusyError):
        Spool(tmp_path).open()
    await first.aclose()
    second = Spool(tmp_path)
    second.open()
    await second.aclose()


CRASH = textwrap.dedent(
    """
    import asyncio, os, signal, sys
    sys.path.insert(0, {root!r})
    from aegis.sidecar.ledger.spool import Spool
    from aegis.sidecar.ledger.store import LedgerStore
    from tests.sidecar.ledger_helpers import record

    async def main():
        store = LedgerStore({url!r}, flush_interval=30, batch_size=500,
                            spool=Spool(__import__("pathlib").Path({spool!r})))
        await store.start()
        for i in range(120):
            store.append(record(i))
        await store.flush()  # the first 120 reach the database
        for i in range(120, 300):
            store.append(record(i))  # these are only queued (and spooled)
        os.kill(os.getpid(), signal.SIGKILL)

    asyncio.run(main())
    """
)


async def test_a_killed_process_loses_nothing_and_the_replay_adds_no_duplicate(
    tmp_path: Path,
) -> None:
    url, spool = sqlite_url(tmp_path), str(tmp_path / "spool")
    script = CRASH.format(root=str(ROOT), url=url, spool=spool)
    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-c", script], capture_output=True, check=False
    )
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()
    with sqlite3.connect(tmp_path / "ledger.db") as db:
        assert db.execute("SELECT count(*) FROM ledger_entries").fetchone() == (120,)
    async with LedgerStore(url, spool=Spool(Path(spool))) as store:
        assert store.rows_recovered == 300
        await asyncio.wait_for(store.replayed.wait(), 10)
        assert store.rows_written == 180
        assert store.duplicates_skipped == 120
    with sqlite3.connect(tmp_path / "ledger.db") as db:
        assert db.execute("SELECT count(*) FROM ledger_entries").fetchone() == (300,)
    assert len(segments(Path(spool))) <= 1  # a clean close compacts: only an empty one


async def test_a_long_outage_spills_to_the_spool_and_keeps_order(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    async with LedgerStore(
        url, batch_size=5, max_pending=10, flush_interval=0.01, spool=Spool(tmp_path / "s")
    ) as store:
        locker = sqlite3.connect(tmp_path / "ledger.db", isolation_level=None)
        locker.execute("BEGIN EXCLUSIVE")  # the database is "down"
        for i in range(100):
            store.append(record(i, created_at=datetime(2026, 11, 3, tzinfo=UTC) + timedelta(i)))
        assert len(store._queue) <= 10  # memory stays bounded ...
        assert store.pending == 100  # ... and nothing is forgotten
        await poll_until(lambda: store.write_errors > 0, within=30)  # the writer was refused
        assert store.pending == 100 and store.rows_dropped == 0
        locker.execute("COMMIT")
        locker.close()
        await poll_until(lambda: not store.pending, within=20)
        assert store.rows_dropped == 0
    with sqlite3.connect(tmp_path / "ledger.db") as db:
        ids = db.execute("SELECT request_id FROM ledger_entries ORDER BY created_at").fetchall()
    assert [i for (i,) in ids] == [f"req-{i:06d}" for i in range(100)]
