"""The spool's binding to its ledger, piece by piece: runs, held sets, the report and
discard command, the metric, and the database's own refusal of foreign rows."""

from __future__ import annotations

import json
import os
from decimal import Decimal
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from aegis.operator.cli import main
from aegis.sidecar.commands import run_spool
from aegis.sidecar.ledger.binder import discard
from aegis.sidecar.ledger.database import DatabaseError, PostgresConnection, open_database
from aegis.sidecar.ledger.spool import Spool, encode_body
from aegis.sidecar.ledger.spool_binding import HELD, read_runs
from aegis.sidecar.ledger.store import LedgerStore
from aegis.sidecar.ledger.urls import target_of
from aegis.sidecar.ledger.writes import LEDGER_MISMATCH, sqlstate, write_postgres
from aegis.sidecar.runtime.wiring import open_budgets, spool_dir
from tests.sidecar.ledger_helpers import record, sqlite_url
from tests.sidecar.shared_helpers import fetch, write_rows
from tests.sidecar.tenancy import provision


async def leave_rows(directory: Path, target: str, ledger: str | None, ids: range) -> None:
    """What a killed process leaves: a run (bound to ``ledger`` once it had read it)
    and its rows, never committed."""
    spool = Spool(directory)
    spool.open(target=target)
    if ledger is not None:
        spool.bind(ledger)
    for i in ids:
        spool.append(encode_body(record(i, cost_usd=Decimal("0.25")), ""))
    await spool.aclose()


async def count(url: str) -> int:
    [(rows,)] = await fetch(url, "SELECT count(*) FROM ledger_entries")
    return int(rows)


async def test_rows_of_another_ledger_are_held_reported_and_discarded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = sqlite_url(tmp_path)
    spool = tmp_path / "spool"
    await leave_rows(spool, "postgresql://ns@elsewhere:5432/a", "other-ledger@x", range(4))
    async with LedgerStore(url, spool=Spool(spool)) as store:
        await store.flush()
        assert store.replayed.is_set()
        assert store.rows_recovered == 0
    assert await count(url) == 0
    assert run_spool(config=None, url=None, directory=spool, as_json=True) == 0
    report = json.loads(capsys.readouterr().out)
    [held] = report["held"]
    assert (held["rows"], Decimal(held["cost_usd"])) == (4, Decimal("1.000000"))
    assert held["ledger"] == "other-ledger@x"
    assert held["target"] == "postgresql://ns@elsewhere:5432/a"
    assert run_spool(config=None, url=None, directory=spool, discard="nope") == 2
    assert run_spool(config=None, url=None, directory=spool, discard=held["name"]) == 0
    assert not any((spool / HELD).iterdir())
    async with LedgerStore(url, spool=Spool(spool)) as store:
        await store.flush()
        assert store.binder.held_rows == 0
    assert await count(url) == 0  # discarded rows are written nowhere


async def test_the_metric_counts_held_rows(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    await leave_rows(tmp_path / "s", "sqlite:/elsewhere.db", "other@sqlite", range(3))
    registry = CollectorRegistry()
    async with LedgerStore(url, spool=Spool(tmp_path / "s")) as store:
        await open_budgets([], store, registry)
        assert registry.get_sample_value("aegis_ledger_spool_held_rows") == 3
        assert store.binder.held_sets == 1
        [held] = store.binder.spool.directory.joinpath(HELD).iterdir()  # type: ignore[union-attr]
        discard(held.parent.parent, held.name)
        assert registry.get_sample_value("aegis_ledger_spool_held_rows") == 0


async def test_a_run_that_never_reached_its_ledger_replays_only_at_the_same_target(
    tmp_path: Path,
) -> None:
    url = sqlite_url(tmp_path)
    same, other = tmp_path / "same", tmp_path / "other"
    await leave_rows(same, target_of(url), None, range(5))
    await leave_rows(other, "sqlite:/another.db", None, range(10, 12))
    async with LedgerStore(url, spool=Spool(same)) as store:
        await store.flush()
        assert store.rows_recovered == 5
    async with LedgerStore(url, spool=Spool(other)) as store:
        await store.flush()
        assert store.binder.held_rows == 2
    assert await count(url) == 5


async def test_rows_spooled_before_the_ledger_had_an_id_replay_at_the_same_target(
    tmp_path: Path,
) -> None:
    url = sqlite_url(tmp_path)
    same, other = tmp_path / "same", tmp_path / "other"
    await leave_rows(same, target_of(url), f"unversioned@{target_of(url)}", range(3))
    await leave_rows(other, "sqlite:/x.db", "unversioned@sqlite:/x.db", range(10, 12))
    async with LedgerStore(url, spool=Spool(same)) as store:  # migrated (an id) meanwhile
        await store.flush()
        assert store.rows_recovered == 3
    async with LedgerStore(url, spool=Spool(other)) as store:
        await store.flush()
        assert store.binder.held_rows == 2
    assert await count(url) == 3


async def test_rows_of_this_ledger_replay_and_the_run_is_recorded(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    spool = tmp_path / "s"
    async with LedgerStore(url, spool=Spool(spool)) as store:
        await store.flush()
        assert store.binder.identity is not None
        key = store.binder.identity.key
    runs = read_runs(spool)
    assert runs is not None and runs[-1].ledger == key and runs[-1].target == target_of(url)
    await leave_rows(spool, target_of(url), key, range(7))
    async with LedgerStore(url, spool=Spool(spool)) as store:
        await store.flush()
        assert store.rows_recovered == 7
    assert await count(url) == 7


async def test_a_crash_while_holding_puts_the_rows_back(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    spool = tmp_path / "s"
    await leave_rows(spool, target_of(url), None, range(6))
    [segment] = sorted(spool.glob("seg-*.spool"))
    partial = spool / HELD / ".partial-crashed"
    partial.mkdir(parents=True)
    segment.rename(partial / segment.name)  # killed in the middle of holding
    async with LedgerStore(url, spool=Spool(spool)) as store:
        await store.flush()
        assert store.rows_recovered == 6
    assert not partial.exists()
    assert await count(url) == 6


def test_the_default_spool_is_private_and_per_ledger(tmp_path: Path) -> None:
    env: dict[str, str] = {}
    a = spool_dir("postgresql://u:secret@db-a:5432/ledger", "ns/pod", env)
    b = spool_dir("postgresql://u:secret@db-b:5432/ledger", "ns/pod", env)
    assert a is not None and b is not None and a != b and a.name == b.name == "ns_pod"
    root = a.parent.parent
    assert root.stat().st_mode & 0o077 == 0
    assert root.stat().st_uid == os.geteuid()
    assert "secret" not in str(a)
    assert spool_dir("x", "ns/pod", {"AEGIS_SPOOL_DIR": str(tmp_path)}) == tmp_path / "ns_pod"


@pytest.mark.postgres
async def test_the_database_refuses_rows_bound_to_another_ledger(pg_url: str) -> None:
    await provision(pg_url, "ns")
    [(ledger_id, database)] = await fetch(pg_url, "SELECT * FROM aegis.ledger_identity()")
    assert len(ledger_id) == 36 and database.count("/") == 1
    database = open_database(pg_url)
    try:
        async with database.connect() as connection:
            assert isinstance(connection, PostgresConnection)
            with pytest.raises(DatabaseError) as refused:
                row = record(1, cost_usd=Decimal("1"))
                await write_postgres(
                    connection, "ns/pod", [row], [encode_body(row, "")], ledger="another-one"
                )
            assert sqlstate(refused.value) == LEDGER_MISMATCH
            row = record(2, cost_usd=Decimal("1"))
            assert (
                await write_postgres(
                    connection, "ns/pod", [row], [encode_body(row, "")], ledger=ledger_id
                )
                == 1
            )
            assert await write_rows(connection, "ns/pod", [record(3)], [""]) == 1  # unbound
    finally:
        await database.aclose()
    assert [r for (r,) in await fetch(pg_url, "SELECT request_id FROM aegis.ledger_entries")] == [
        "req-000002",
        "req-000003",
    ]


async def test_the_command_line_lists_and_discards(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spool = tmp_path / "s"
    await leave_rows(spool, "postgresql://ns@elsewhere:5432/a", "other@x", range(2))
    async with LedgerStore(sqlite_url(tmp_path), spool=Spool(spool)) as store:
        await store.flush()
    capsys.readouterr()
    assert main(["ledger", "spool", "--dir", str(spool)]) == 0
    listing = capsys.readouterr().out
    assert "held " in listing and "2 rows, 0.50 USD" in listing and "other@x" in listing
    [held] = (spool / HELD).iterdir()
    assert main(["ledger", "spool", "--dir", str(spool), "--discard", held.name]) == 0
    assert main(["ledger", "spool", "--dir", str(spool)]) == 0
    assert "no rows held for another ledger" in capsys.readouterr().out
    assert main(["ledger", "spool"]) == 2  # neither --config nor --dir
