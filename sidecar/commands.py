"""What ``aegis sidecar`` and ``aegis ledger …`` do (the parser lives in the CLI).

Functions take plain values and return an exit code, so they are callable from
tests and from the CLI alike. The ledger's read side, control and migration
commands (and SQLAlchemy, which they use) are imported by the functions that use
them: ``aegis sidecar`` imports this module, and a sidecar process never reports,
grants nor partitions.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from .contract import BudgetSpec, ConfigError, load_config
from .contract.periods import zone
from .ledger import binder
from .ledger.database import LedgerUnavailableError
from .ledger.urls import is_sqlite, ledger_url
from .logs import configure_logging

INSUFFICIENT_PRIVILEGE = "42501"


def run_sidecar(
    config: Path,
    *,
    port: int | None = None,
    metrics_port: int | None = None,
    metrics_host: str | None = None,
) -> int:
    # Here, not at the top: ``aegis ledger ...`` need not load aiohttp and the
    # whole request path.
    from .http.server import new_event_loop, run_forever

    configure_logging()
    try:
        with asyncio.Runner(loop_factory=new_event_loop) as runner:
            runner.run(run_forever(config, port, metrics_port, metrics_host))
    except ConfigError as exc:
        print(f"aegis sidecar: invalid config: {exc}", file=sys.stderr)
        return 2
    return 0


def _ledger_source(
    config: Path | None, url: str | None
) -> tuple[str, list[BudgetSpec], str | None]:
    """The ledger URL, the config's budgets and the namespace they are of."""
    if url is not None:
        return url, [], None
    assert config is not None
    loaded = load_config(config).config
    return ledger_url(loaded.ledger), list(loaded.budgets), loaded.identity.namespace


async def _grant(url: str, control: str | None, reader: str | None) -> None:
    from .ledger.db import create_engine
    from .ledger.roles import apply_grants

    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            await apply_grants(connection, control=control, reader=reader)
    finally:
        await engine.dispose()


async def _tenant(url: str, namespace: str, base: str | None) -> str:
    """Create (or re-password) the namespace's tenant role; its DSN."""
    from .ledger import control
    from .ledger.db import create_engine

    password = control.new_password()
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            role = await control.ensure_tenant(connection, namespace, password)
    finally:
        await engine.dispose()
    return control.tenant_url(base or url, role, password)


def _spool_dir(config: Path | None, url: str | None, directory: Path | None) -> Path:
    """``--dir``, else the spool this sidecar uses (config, ``POD_NAME`` and
    ``AEGIS_SPOOL_DIR`` as the sidecar reads them)."""
    if directory is not None:
        return directory
    if config is None:
        raise ValueError("give --config (the sidecar's) or --dir (a spool directory)")
    from .runtime.wiring import holder_name, spool_dir

    loaded = load_config(config).config
    pod = os.environ.get("POD_NAME") or os.uname().nodename
    found = spool_dir(url or ledger_url(loaded.ledger), holder_name(loaded, pod))
    if found is None:
        raise ValueError("this ledger (in-memory SQLite) has no spool")
    return found


def run_spool(
    *,
    config: Path | None,
    url: str | None,
    directory: Path | None = None,
    discard: str | None = None,
    as_json: bool = False,
) -> int:
    """``aegis ledger spool``: the spool's runs and the rows held aside for another
    ledger; ``--discard NAME`` deletes one held set (its rows are never written)."""
    try:
        where = _spool_dir(config, url, directory)
        if discard is not None:
            rows = binder.discard(where, discard)
            print(f"discarded held set {discard} ({rows} rows)")
            return 0
        found = binder.inventory(where)
    except ConfigError as exc:
        print(f"aegis ledger spool: invalid config: {exc}", file=sys.stderr)
        return 2
    except (ValueError, RuntimeError, OSError) as exc:
        print(f"aegis ledger spool: {exc}", file=sys.stderr)
        return 2
    if as_json:
        print(json.dumps(found, indent=2))
        return 0
    print(f"spool {found['directory']}")
    for run in found["runs"]:
        print(f"  run from #{run['first']}: {run['target']} ledger {run['ledger'] or '?'}")
    if not found["held"]:
        print("no rows held for another ledger")
    for held in found["held"]:
        print(
            f"  held {held['name']}: {held['rows']} rows, {held['cost_usd']} USD, "
            f"{held['first_at']} .. {held['last_at']}, ledger {held['ledger'] or '?'} "
            f"at {held['target']} (held {held['held_at']})"
        )
    return 0


def run_ledger(
    action: str,
    *,
    config: Path | None,
    url: str | None,
    fmt: str | None = None,
    month: str | None = None,
    output: Path | None = None,
    grant_control: str | None = None,
    grant_reader: str | None = None,
    namespace: str | None = None,
    tenant_url: str | None = None,
    by: Sequence[str] = (),
    period: str | None = None,
    timezone: str = "UTC",
) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    from .ledger import migrate as migrations
    from .ledger import partitions, spend_report
    from .ledger import report as reports

    try:
        source, budgets, own_namespace = _ledger_source(config, url)
    except ConfigError as exc:
        print(f"aegis ledger: invalid config: {exc}", file=sys.stderr)
        return 2
    try:
        if action == "migrate":
            revision = migrations.migrate(source)
            print(f"ledger at revision {revision}")
            if not is_sqlite(source):  # at every run, so months ahead always have one
                created = asyncio.run(partitions.ensure_partitions(source))
                print(f"ledger partitions: {created} created")
            if (grant_control or grant_reader) and not is_sqlite(source):
                asyncio.run(_grant(source, grant_control, grant_reader))
                print(f"granted: control {grant_control or '-'}, reader {grant_reader or '-'}")
        elif action in ("export", "report") and (by or period):
            keys = spend_report.parse_keys(by or ["namespace"])
            if action == "export" and not by:
                raise ValueError("--period selects grouped spend: give --by too (or --month)")
            default: spend_report.GroupFormat = "csv" if action == "export" else "text"
            _grouped(
                source,
                keys,
                fmt=fmt or default,
                month=month,
                period=period,
                timezone=timezone,
                output=output,
            )
        elif action == "export":
            fmt = fmt or "csv"
            if fmt not in ("csv", "json"):
                raise ValueError(f"unknown format {fmt!r}")
            if output is None:
                asyncio.run(reports.export(source, "csv" if fmt == "csv" else "json", month))
            else:
                with output.open("w", encoding="utf-8", newline="") as out:
                    count = asyncio.run(
                        reports.export(source, "csv" if fmt == "csv" else "json", month, out)
                    )
                print(f"wrote {count} rows to {output}", file=sys.stderr)
        elif action == "report":
            if fmt not in (None, "text"):
                raise ValueError("--format csv|json needs --by (or use aegis ledger export)")
            text = asyncio.run(reports.report(source, budgets, month, namespace=own_namespace))
            if output is None:
                print(text)
            else:
                output.write_text(text, encoding="utf-8")
        elif action == "tenant":
            if not namespace:
                raise ValueError("--namespace is required")
            # The DSN holds a password: it goes to stdout for a Secret, never to a log.
            print(asyncio.run(_tenant(source, namespace, tenant_url)))
        else:
            raise ValueError(f"unknown ledger action {action!r}")
    except ValueError as exc:
        print(f"aegis ledger {action}: {exc}", file=sys.stderr)
        return 2
    except SQLAlchemyError as exc:
        if getattr(getattr(exc, "orig", None), "sqlstate", None) == INSUFFICIENT_PRIVILEGE:
            print(
                f"aegis ledger {action}: this role may not read the ledger: use the owner's "
                "or the reader role's DSN (aegis ledger migrate --grant-reader ROLE), not a "
                "namespace's",
                file=sys.stderr,
            )
            return 1
        message = str(exc).splitlines()[0]
        print(f"aegis ledger {action}: cannot read the ledger: {message}", file=sys.stderr)
        return 1
    except (LedgerUnavailableError, OSError) as exc:
        # One line a person can act on (no ledger yet, server down, wrong credentials).
        message = str(exc).splitlines()[0]
        print(f"aegis ledger {action}: cannot read the ledger: {message}", file=sys.stderr)
        return 1
    return 0


def _grouped(
    source: str,
    keys: Sequence[str],
    *,
    fmt: str,
    month: str | None,
    period: str | None,
    timezone: str,
    output: Path | None,
) -> None:
    """``--by``: spend grouped by ``keys`` for a month, a period key or every row."""
    from .ledger import spend_report

    if fmt not in ("text", "csv", "json"):
        raise ValueError(f"unknown format {fmt!r}: use text, csv or json")
    if month is not None and period is not None:
        raise ValueError("give --month (the ledger's month) or --period, not both")
    between = spend_report.window(period, zone(timezone)) if period is not None else None
    groups = asyncio.run(spend_report.spend_by(source, keys, month=month, between=between))
    scope = (
        f"month {month}" if month else f"period {period} ({timezone})" if period else "all months"
    )
    kind: spend_report.GroupFormat = "csv" if fmt == "csv" else "json" if fmt == "json" else "text"
    if output is None:
        spend_report.write_groups(groups, keys, kind, sys.stdout, scope)
        return
    with output.open("w", encoding="utf-8", newline="") as out:
        spend_report.write_groups(groups, keys, kind, out, scope)
    print(f"wrote {len(groups)} groups to {output}", file=sys.stderr)


def run_retention(
    *,
    config: Path | None,
    url: str | None,
    keep_months: int,
    export_dir: Path | None,
    no_export: bool = False,
    fmt: str = "csv",
) -> int:
    """``aegis ledger retention``: export, then remove, the raw rows of every month
    older than the newest ``keep_months`` (totals stay in the summary table)."""
    from sqlalchemy.exc import SQLAlchemyError

    from .ledger import partitions

    try:
        source, _, _ = _ledger_source(config, url)
        if (export_dir is None) == (not no_export):
            raise ValueError("give --export-dir DIR (export, then drop) or --no-export")
        if fmt not in ("csv", "json"):
            raise ValueError(f"unknown format {fmt!r}: use csv or json")
        removed = asyncio.run(
            partitions.retention(
                source, keep_months, export_dir, fmt="csv" if fmt == "csv" else "json"
            )
        )
    except ConfigError as exc:
        print(f"aegis ledger retention: invalid config: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"aegis ledger retention: {exc}", file=sys.stderr)
        return 2
    except (LedgerUnavailableError, SQLAlchemyError, OSError) as exc:
        message = str(exc).splitlines()[0]
        print(f"aegis ledger retention: {message}", file=sys.stderr)
        return 1
    for month in removed:
        where = f"exported to {month.exported}" if month.exported else "not exported"
        print(f"removed {month.month}: {month.rows} rows, {where}")
    if not removed:
        print(f"nothing older than the newest {keep_months} months")
    return 0
