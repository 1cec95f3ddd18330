"""What ``aegis sidecar`` and ``aegis ledger …`` do (the parser lives in the CLI).

Functions take plain values and return an exit code, so they are callable from
tests and from the CLI alike.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError

from .contract import BudgetSpec, ConfigError, load_config
from .ledger import migrate as migrations
from .ledger import report as reports
from .ledger.db import LedgerUnavailableError, ledger_url
from .logs import configure_logging


def run_sidecar(
    config: Path,
    *,
    port: int | None = None,
    metrics_port: int | None = None,
    metrics_host: str | None = None,
) -> int:
    # Here, not at the top: ``aegis ledger ...`` need not load aiohttp and the
    # whole request path.
    from .http.server import run_forever

    configure_logging()
    try:
        asyncio.run(run_forever(config, port, metrics_port, metrics_host))
    except ConfigError as exc:
        print(f"aegis sidecar: invalid config: {exc}", file=sys.stderr)
        return 2
    return 0


def _ledger_source(config: Path | None, url: str | None) -> tuple[str, list[BudgetSpec]]:
    if url is not None:
        return url, []
    assert config is not None
    loaded = load_config(config).config
    return ledger_url(loaded.ledger), list(loaded.budgets)


def run_ledger(
    action: str,
    *,
    config: Path | None,
    url: str | None,
    fmt: str = "csv",
    month: str | None = None,
    output: Path | None = None,
) -> int:
    try:
        source, budgets = _ledger_source(config, url)
    except ConfigError as exc:
        print(f"aegis ledger: invalid config: {exc}", file=sys.stderr)
        return 2
    try:
        if action == "migrate":
            revision = migrations.migrate(source)
            print(f"ledger at revision {revision}")
        elif action == "export":
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
            print(asyncio.run(reports.report(source, budgets, month)))
        else:
            raise ValueError(f"unknown ledger action {action!r}")
    except ValueError as exc:
        print(f"aegis ledger {action}: {exc}", file=sys.stderr)
        return 2
    except (LedgerUnavailableError, SQLAlchemyError, OSError) as exc:
        # One line a person can act on (no ledger yet, server down, wrong credentials).
        message = str(exc).splitlines()[0]
        print(f"aegis ledger {action}: cannot read the ledger: {message}", file=sys.stderr)
        return 1
    return 0
