"""``aegis ledger report --by`` and ``export --by``: spend per namespace, workload,
route and model, as text, CSV and JSON, on SQLite and PostgreSQL (read with the reader
role; a namespace's tenant role is refused)."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from aegis.sidecar.ledger.database import PostgresConnection, open_database
from aegis.sidecar.ledger.db import create_engine
from aegis.sidecar.ledger.migrate import migrate_async
from aegis.sidecar.ledger.models import LedgerRecord, Status
from aegis.sidecar.ledger.roles import apply_grants
from aegis.sidecar.ledger.spend_report import parse_keys, spend_by
from aegis.sidecar.ledger.spool import encode_body
from aegis.sidecar.ledger.store import LedgerStore
from aegis.sidecar.ledger.writes import write_postgres
from tests.controlplane.postgres import PostgresServer
from tests.sidecar.ledger_helpers import record, sqlite_url
from tests.sidecar.tenancy import tenant_url

AEGIS = [sys.executable, "-m", "aegis.operator.cli"]
D = Decimal
# Monday 2026-11-02 .. Sunday 2026-11-08 is ISO week 2026-W45.
MONDAY = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


def aegis(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*AEGIS, *args], capture_output=True, text=True, timeout=120, check=False)


def rows_of(namespaces: tuple[str, str, str]) -> list[LedgerRecord]:
    """Three namespaces, four workloads, two routes, three models; one row in October,
    one refused, one error; one row of a pod injected before attribution (no workload)."""
    a, b, c = namespaces
    spec: list[tuple[str, str | None, str, str, str, str, str, datetime]] = [
        # namespace, workload, service account, route, provider, model, cost, created
        (a, "Deployment/web", "web", "chat", "openai", "gpt-4o", "1.000001", MONDAY),
        (a, "Deployment/web", "web", "chat", "openai", "gpt-4o", "2.5", MONDAY),
        (a, "CronJob/nightly", "batch", "chat", "dashscope", "qwen-plus", "0.25", MONDAY),
        (a, "CronJob/nightly", "batch", "chat", "dashscope", "qwen-plus", "0", MONDAY),
        (b, "StatefulSet/search", "search", "rag", "openai", "gpt-4o", "4", MONDAY),
        (b, "StatefulSet/search", "search", "rag", "local", "gemma3:4b", "0", MONDAY),
        (b, None, "default", "rag", "openai", "gpt-4o", "0.5", MONDAY),
        (c, "Deployment/web", "web", "chat", "openai", "gpt-4o", "10", MONDAY),
        # a week later (2026-W46), and one in October
        (c, "Deployment/web", "web", "chat", "openai", "gpt-4o", "0.75", MONDAY + timedelta(7)),
        (a, "Deployment/web", "web", "chat", "openai", "gpt-4o", "100", MONDAY - timedelta(30)),
    ]
    rows = []
    for i, (ns, workload, sa, route, provider, model, cost, created) in enumerate(spec):
        rows.append(
            record(
                i,
                namespace=ns,
                workload=workload,
                service_account=sa,
                route=route,
                provider=provider,
                model=model,
                cost_usd=D(cost),
                created_at=created,
                period=created.strftime("%Y-%m"),
                status=Status.REFUSED if i == 3 else Status.ERROR if i == 5 else Status.OK,
            )
        )
    return rows


EXPECTED_NOVEMBER = {  # (namespace, workload) -> (requests, cost)
    ("team-a", "Deployment/web"): (2, D("3.500001")),
    ("team-a", "CronJob/nightly"): (2, D("0.25")),
    ("team-b", "StatefulSet/search"): (2, D("4")),
    ("team-b", None): (1, D("0.5")),
    ("team-c", "Deployment/web"): (2, D("10.75")),
}


def check_november(found: list[dict[str, Any]]) -> None:
    """Rows of the CSV or JSON export ``--by namespace,workload --month 2026-11``."""
    got = {
        (r["namespace"], r["workload"] or None): (int(r["requests"]), D(r["cost_usd"]))
        for r in found
    }
    assert got == EXPECTED_NOVEMBER
    assert [D(r["cost_usd"]) for r in found] == sorted(
        (D(r["cost_usd"]) for r in found), reverse=True
    )  # largest spend first


@pytest.fixture
async def sqlite_ledger(tmp_path: Path) -> str:
    url = sqlite_url(tmp_path)
    async with LedgerStore(url) as store:
        for row in rows_of(("team-a", "team-b", "team-c")):
            store.append(row)
    return url


def test_keys_are_checked_and_normalised() -> None:
    assert parse_keys(["namespace,Workload", "route", "namespace"]) == (
        "namespace",
        "workload",
        "route",
    )
    assert parse_keys(["serviceAccount"]) == ("service_account",)
    with pytest.raises(ValueError, match="cannot group by 'pod': use one or more of namespace"):
        parse_keys(["namespace,pod"])


async def test_spend_by_each_key_on_sqlite(sqlite_ledger: str) -> None:
    by_model = await spend_by(sqlite_ledger, ["model"], month="2026-11")
    assert [(g.key, g.requests, g.cost_usd) for g in by_model] == [
        (("gpt-4o",), 6, D("18.750001")),
        (("qwen-plus",), 2, D("0.25")),
        (("gemma3:4b",), 1, D("0")),
    ]
    [gemma] = [g for g in by_model if g.key == ("gemma3:4b",)]
    assert (gemma.errors, gemma.refused) == (1, 0)
    by_route = await spend_by(sqlite_ledger, ["route", "namespace"])  # every month
    assert {g.key: g.cost_usd for g in by_route} == {
        ("chat", "team-a"): D("103.750001"),
        ("chat", "team-c"): D("10.75"),
        ("rag", "team-b"): D("4.5"),
    }
    by_account = await spend_by(sqlite_ledger, ["namespace", "service_account"], month="2026-11")
    assert {g.key: g.requests for g in by_account}[("team-a", "batch")] == 2


def test_cli_report_and_export_by_namespace_and_workload(
    sqlite_ledger: str, tmp_path: Path
) -> None:
    by = ("--by", "namespace,workload", "--month", "2026-11")
    text = aegis("ledger", "report", "--url", sqlite_ledger, *by)
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[0] == "Aegis ledger: spend by namespace, workload (month 2026-11)"
    assert any(line.split()[:2] == ["team-c", "Deployment/web"] for line in lines)
    assert any(line.split()[:2] == ["team-b", "-"] for line in lines)  # no workload recorded
    assert lines[-1].split()[0] == "total" and lines[-1].split()[-1] == "19.000001"

    as_csv = aegis("ledger", "export", "--url", sqlite_ledger, *by)  # CSV by default
    assert as_csv.returncode == 0, as_csv.stderr
    check_november(list(csv.DictReader(io.StringIO(as_csv.stdout))))

    out = tmp_path / "spend.json"
    as_json = aegis(
        "ledger", "report", "--url", sqlite_ledger, *by, "--format", "json", "--output", str(out)
    )
    assert as_json.returncode == 0, as_json.stderr
    assert "wrote 5 groups" in as_json.stderr
    check_november(json.loads(out.read_text()))


def test_cli_period_keys_select_by_creation_time(sqlite_ledger: str) -> None:
    week = aegis(
        "ledger", "export", "--url", sqlite_ledger, "--by", "namespace",
        "--period", "2026-W46", "--format", "json",
    )  # fmt: skip
    assert week.returncode == 0, week.stderr
    assert json.loads(week.stdout) == [
        {
            "namespace": "team-c",
            "requests": 1,
            "errors": 0,
            "refused": 0,
            "tokens_in": 108,
            "tokens_out": 28,
            "cost_usd": "0.750000",
        }
    ]
    # 2026-11-02 09:00 UTC is still 1 November in Honolulu (UTC-10): that day holds the
    # eight Monday rows there, none in UTC.
    day = ("--by", "route", "--period", "2026-11-01", "--format", "csv")
    utc = aegis("ledger", "export", "--url", sqlite_ledger, *day)
    assert list(csv.DictReader(io.StringIO(utc.stdout))) == []
    la = aegis("ledger", "export", "--url", sqlite_ledger, *day, "--timezone", "Pacific/Honolulu")
    assert {r["route"]: r["requests"] for r in csv.DictReader(io.StringIO(la.stdout))} == {
        "chat": "5",
        "rag": "3",
    }


def test_cli_refuses_bad_arguments_clearly(sqlite_ledger: str) -> None:
    for args, message in [
        (("--by", "pod"), "cannot group by 'pod'"),
        (("--by", "route", "--period", "2026-13"), "period must be a day (YYYY-MM-DD)"),
        (("--by", "route", "--period", "2026-11", "--month", "2026-11"), "not both"),
        (("--by", "route", "--period", "2026-11", "--timezone", "Mars/Base"), "unknown time zone"),
        (("--format", "csv"), "--format csv|json needs --by"),
    ]:
        done = aegis("ledger", "report", "--url", sqlite_ledger, *args)
        assert done.returncode == 2, (args, done.stdout)
        assert message in done.stderr, (args, done.stderr)


# -- PostgreSQL: written by three tenants, read by the reader role ---------------------------
SUFFIX = uuid.uuid4().hex[:6]
NAMESPACES = (f"team-a-{SUFFIX}", f"team-b-{SUFFIX}", f"team-c-{SUFFIX}")


@pytest.fixture
def reader(postgres: PostgresServer, pg_url: str) -> Iterator[str]:
    """A reader role of this test's (roles are global to the server: dropped after)."""
    role = f"aegis_reader_{SUFFIX}"
    postgres.psql(f"CREATE ROLE {role} LOGIN")
    yield role
    postgres.drop_database(pg_url.rsplit("/", 1)[1])
    for name in (role, *("aegis_ns_" + ns.replace("-", "_") for ns in NAMESPACES)):
        postgres.psql(f"DROP ROLE IF EXISTS {name}")


async def _write_as_tenants(pg_url: str, reader: str, namespaces: tuple[str, str, str]) -> str:
    """Every namespace's rows through its own tenant role; returns a tenant's DSN."""
    await migrate_async(pg_url)
    engine = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    async with engine.connect() as connection:
        await apply_grants(connection, reader=reader)
    await engine.dispose()
    rows = rows_of(namespaces)
    dsn = ""
    for ns in namespaces:
        dsn = await tenant_url(pg_url, ns)
        database = open_database(dsn)
        try:
            mine = [r for r in rows if r.namespace == ns]
            async with database.connect() as connection:
                assert isinstance(connection, PostgresConnection)
                bodies = [encode_body(r, "") for r in mine]
                assert await write_postgres(connection, f"{ns}/pod", mine, bodies) == len(mine)
        finally:
            await database.aclose()
    return dsn


@pytest.mark.postgres
def test_postgres_report_by_the_reader_role_and_not_by_a_tenant(pg_url: str, reader: str) -> None:
    tenant_dsn = asyncio.run(_write_as_tenants(pg_url, reader, NAMESPACES))
    reader_url = pg_url.replace("postgresql://postgres@", f"postgresql://{reader}@")
    by = ("--by", "namespace,workload", "--month", "2026-11")

    as_json = aegis("ledger", "export", "--url", reader_url, *by, "--format", "json")
    assert as_json.returncode == 0, as_json.stderr
    found = json.loads(as_json.stdout)
    for row in found:
        row["namespace"] = row["namespace"].removesuffix(f"-{SUFFIX}")
    check_november(found)

    as_csv = aegis("ledger", "report", "--url", reader_url, *by, "--format", "csv")
    assert as_csv.returncode == 0, as_csv.stderr
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert sum(D(r["cost_usd"]) for r in rows) == D("19.000001")

    refused = aegis("ledger", "report", "--url", tenant_dsn, *by)
    assert refused.returncode == 1
    assert "this role may not read the ledger: use the owner's or the reader role's DSN" in (
        refused.stderr
    )
