"""Property: the ledger spool survives crashes and damaged bytes without inventing,
duplicating or reordering a row.

Flipped bytes (hypothesis picks the segments, offsets and bits): reopening replays
only rows exactly as they were written (a damaged line is counted, never replayed
altered), each once; every row of an undamaged segment comes back, and so does
every row before the first damaged line of a damaged one. Two stronger properties
do not hold yet and are kept as strict expected failures (see their reasons).

SIGKILL (hypothesis picks when): a process appending rows, then one replaying
them, then one compacting, each killed at a drawn point; a last, clean life
replays the rest. Every row appended lands in the ledger exactly once, at its cost.
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import subprocess
import sys
import textwrap
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aegis.sidecar.ledger.spool import Spool, Spooled, encode, encode_body
from tests.sidecar.ledger_helpers import record, sqlite_url

ROOT = Path(__file__).resolve().parents[2]
ROWS = 40


def segments(directory: Path) -> list[Path]:
    return sorted(directory.glob("seg-*.spool"))


def spooled(directory: Path) -> dict[int, bytes]:
    """Write ROWS rows into a fresh spool of small segments; ``seq -> line``."""
    spool = Spool(directory, segment_bytes=1500)
    spool.open()
    lines = {}
    for i in range(ROWS):
        body = encode_body(record(i, cost_usd=Decimal(i) / 1000), "")
        lines[spool.append(body)] = encode(i + 1, body)
    asyncio.run(spool.aclose())
    return lines


flips = st.lists(
    st.tuples(st.integers(0, 10_000), st.floats(0, 1, exclude_max=True), st.integers(0, 7)),
    min_size=1,
    max_size=4,
)


def damage(directory: Path, drawn: list[tuple[int, float, int]]) -> dict[Path, int]:
    """Flip the drawn bits; the offset of the first damaged byte of each segment."""
    files = segments(directory)
    first: dict[Path, int] = {}
    files = [f for f in files if f.stat().st_size]
    for which, where, bit in drawn:
        path = files[which % len(files)]
        data = bytearray(path.read_bytes())
        offset = int(where * len(data))
        data[offset] ^= 1 << bit
        path.write_bytes(bytes(data))
        first[path] = min(first.get(path, offset), offset)
    return first


def expected_prefix(directory: Path, lines: dict[int, bytes], first: dict[Path, int]) -> set[int]:
    """Rows whose whole line lies in an undamaged segment, or before its first damage."""
    kept = set()
    for path in segments(directory):
        offset, start = 0, int(path.name[4:-6])
        for seq in range(start, ROWS + 1):
            offset += len(lines[seq])
            if offset > path.stat().st_size:
                break
            if path not in first or offset <= first[path]:
                kept.add(seq)
    return kept


def reopened(directory: Path) -> tuple[list[Spooled], int]:
    again = Spool(directory)
    rows = again.open()
    asyncio.run(again.aclose())
    return rows, again.corrupt_lines


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(drawn=flips)
def test_flipped_bytes_never_alter_a_row_nor_lose_an_undamaged_one(
    tmp_path_factory: pytest.TempPathFactory, drawn: list[tuple[int, float, int]]
) -> None:
    directory = tmp_path_factory.mktemp("spool")
    lines = spooled(directory)
    written = {line.split(b"\t", 2)[2] for line in lines.values()}
    kept = expected_prefix(directory, lines, damage(directory, drawn))
    rows, corrupt = reopened(directory)
    bodies = [row.body + b"\n" for row in rows]
    assert set(bodies) <= written  # exactly as written, or not at all
    assert len(bodies) == len(set(bodies))  # never twice
    assert {lines[seq].split(b"\t", 2)[2] for seq in kept} <= set(bodies)
    assert corrupt >= 1 or len(bodies) == ROWS


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(drawn=flips)
def test_replayed_rows_keep_their_sequence_numbers(
    tmp_path_factory: pytest.TempPathFactory, drawn: list[tuple[int, float, int]]
) -> None:
    directory = tmp_path_factory.mktemp("spool")
    lines = spooled(directory)
    damage(directory, drawn)
    rows, _ = reopened(directory)
    seqs = [row.seq for row in rows]
    assert seqs == sorted(set(seqs))  # once each, in order
    for row in rows:
        assert encode(row.seq, row.body) == lines.get(row.seq), row.seq


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(drawn=flips)
def test_every_intact_line_is_replayed(
    tmp_path_factory: pytest.TempPathFactory, drawn: list[tuple[int, float, int]]
) -> None:
    directory = tmp_path_factory.mktemp("spool")
    lines = spooled(directory)
    damage(directory, drawn)
    intact = {
        seq
        for path in segments(directory)
        for line in path.read_bytes().splitlines(keepends=True)
        for seq, written in lines.items()
        if line == written
    }
    rows, _ = reopened(directory)
    assert intact <= {row.seq for row in rows}


LIFE = textwrap.dedent(
    """
    import asyncio, os, signal, sys
    from decimal import Decimal
    from pathlib import Path
    sys.path.insert(0, {root!r})
    from aegis.sidecar.ledger.spool import Spool
    from aegis.sidecar.ledger.store import LedgerStore
    from tests.sidecar.ledger_helpers import record

    async def main():
        store = LedgerStore({url!r}, flush_interval=0.001, batch_size={batch},
                            spool=Spool(Path({spool!r}), segment_bytes=1500))
        await store.start()  # replays what an earlier life left
        for i in range({first}, {last}):
            store.append(record(i, cost_usd=Decimal(i) / 1000))
            if i == {kill_at}:
                os.kill(os.getpid(), signal.SIGKILL)  # mid-write: the kill point drawn
            if i % 7 == 0:
                await asyncio.sleep(0)  # deliberate: let the writer run between appends
        if {kill_in_replay}:
            await asyncio.sleep(0)  # deliberate: the writer has started, not finished
            os.kill(os.getpid(), signal.SIGKILL)
        await store.aclose()  # a clean close compacts the spool

    asyncio.run(main())
    """
)


def life(
    tmp: Path, first: int, last: int, *, kill_at: int = -1, kill_in_replay: bool = False
) -> int:
    script = LIFE.format(
        root=str(ROOT),
        url=sqlite_url(tmp),
        spool=str(tmp / "spool"),
        batch=5,
        first=first,
        last=last,
        kill_at=kill_at,
        kill_in_replay=kill_in_replay,
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, check=False, timeout=120
    )
    assert done.returncode in {0, -signal.SIGKILL}, done.stderr.decode()
    return done.returncode


@pytest.mark.slow
@settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    kill_at=st.integers(0, 59),
    second=st.integers(60, 90),
    kill_in_replay=st.booleans(),
)
def test_killed_lives_lose_nothing_and_duplicate_nothing(
    tmp_path_factory: pytest.TempPathFactory, kill_at: int, second: int, kill_in_replay: bool
) -> None:
    tmp = tmp_path_factory.mktemp("lives")
    assert life(tmp, 0, 60, kill_at=kill_at) == -signal.SIGKILL  # killed while appending
    # The next life replays, appends more and may be killed while its writer runs.
    life(tmp, kill_at + 1, second, kill_in_replay=kill_in_replay)
    assert life(tmp, second, second) == 0  # a clean life: replay, close, compact
    with sqlite3.connect(tmp / "ledger.db") as db:
        rows = dict(db.execute("SELECT request_id, cost_usd FROM ledger_entries"))
    appended = list(range(kill_at + 1)) + list(range(kill_at + 1, second))
    assert sorted(rows) == sorted(f"req-{i:06d}" for i in appended)  # each exactly once
    # SQLite keeps money as integer micro-dollars: row i cost i/1000 USD.
    assert all(rows[f"req-{i:06d}"] == i * 1000 for i in appended)
