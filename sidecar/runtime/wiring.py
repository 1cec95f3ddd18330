"""Wiring of a sidecar's ledger, spool and budget book, and their metrics.

Standalone (SQLite): one process owns the ledger, so the book holds the whole
remaining budget (:class:`~aegis.sidecar.budgets.sources.LocalBudgetSource`).
Cluster (PostgreSQL): the book spends leases (:mod:`aegis.sidecar.budgets.leases`),
and every row the store writes is charged to this sidecar's leases.

The spool lives in ``$AEGIS_SPOOL_DIR/<holder>`` (the injector mounts an
``emptyDir`` there, which survives container restarts, so a restarted sidecar
replays it), else next to a SQLite ledger file, else in a directory of the user's
own under the temp directory, one per ledger target (two sidecars of one user
writing to different databases never share a spool; other users cannot read it).
Wherever it is, the spool is bound to the ledger it was written for
(:mod:`aegis.sidecar.ledger.spool_binding`).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import stat
import tempfile
from collections.abc import Callable, Collection, Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from ..budgets import BudgetBook, LeaseBudgetSource, LeaseSettings
from ..contract import BudgetSpec, SidecarConfig
from ..ledger import LedgerStore
from ..ledger.spool import Spool
from ..ledger.urls import parse_url, target_of

SPOOL_ENV = "AEGIS_SPOOL_DIR"


def holder_name(config: SidecarConfig, pod: str) -> str:
    """This sidecar in lease rows: ``namespace/pod`` (unique while the pod lives)."""
    return f"{config.identity.namespace}/{pod}"


def spool_dir(url: str, holder: str, environ: dict[str, str] | None = None) -> Path | None:
    """Where this sidecar spools rows; ``None`` for an in-memory SQLite ledger."""
    env = os.environ if environ is None else environ
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", holder)
    if env.get(SPOOL_ENV):
        return Path(env[SPOOL_ENV]) / safe
    location = parse_url(url)
    if location.is_sqlite:
        path = location.path
        return None if path is None else path.expanduser().with_name(path.name + ".spool") / safe
    target = hashlib.sha256(target_of(url).encode()).hexdigest()[:16]
    return private_temp_dir() / target / safe


def private_temp_dir() -> Path:
    """``<tmp>/aegis-spool-<uid>``: created ``0700`` and refused unless this user
    owns it and nobody else may write to it (the temp directory is shared)."""
    root = Path(tempfile.gettempdir()) / f"aegis-spool-{os.geteuid()}"
    with contextlib.suppress(FileExistsError):
        root.mkdir(mode=0o700)
    info = root.lstat()
    if (
        not stat.S_ISDIR(info.st_mode)
        or info.st_uid != os.geteuid()
        or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    ):
        raise RuntimeError(
            f"spool directory {root} is not a private directory of this user: "
            f"set {SPOOL_ENV} to one that is"
        )
    return root


def build_ledger(url: str, config: SidecarConfig, pod: str) -> LedgerStore:
    holder = holder_name(config, pod)
    directory = spool_dir(url, holder)
    spool = Spool(directory) if directory is not None else None
    return LedgerStore(url, spool=spool, holder=holder)


async def open_budgets(
    budgets: Sequence[BudgetSpec],
    ledger: LedgerStore,
    registry: CollectorRegistry | None = None,
    *,
    settings: LeaseSettings | None = None,
    clock: Callable[[], datetime] | None = None,
    service_account: str | None = None,
    local_providers: Collection[str] = (),
) -> tuple[BudgetBook, LeaseBudgetSource | None]:
    """The book for ``ledger`` (started); a lease source when it is PostgreSQL.
    ``clock`` decides periods (tests inject one to cross a period boundary);
    ``service_account`` (the pod's) and ``local_providers`` decide which budgets
    apply to a call."""
    now = clock or (lambda: datetime.now(UTC))
    if ledger.database.is_sqlite:
        book = await BudgetBook.open(
            budgets,
            ledger,
            clock=now,
            namespace=(ledger.holder or "").partition("/")[0],  # keys its budgets
            service_account=service_account,
            local_providers=local_providers,
        )
        source = None
    else:
        source = LeaseBudgetSource(
            ledger.database, ledger.holder, settings=settings, replayed=ledger.replayed
        )
        book = BudgetBook(
            budgets,
            source,
            clock=now,
            namespace=source.namespace,
            service_account=service_account,
            local_providers=local_providers,
        )
        # A row appended without its reservation's charges (none on the request path).
        ledger.charge_to = lambda record: book.charged_budgets(record.provider)
        ledger.on_health = source.ledger_health
        await source.start(book)
    if registry is not None:
        registry.register(LedgerCollector(ledger, book, source))
    return book, source


class LedgerCollector(Collector):
    """Ledger, spool and lease figures, read at scrape time (no request-path cost)."""

    def __init__(
        self, ledger: LedgerStore, book: BudgetBook, source: LeaseBudgetSource | None
    ) -> None:
        self.ledger = ledger
        self.book = book
        self.source = source

    def collect(self) -> Iterable[Metric]:
        ledger, book, source = self.ledger, self.book, self.source
        available = GaugeMetricFamily(
            "aegis_budget_available",
            "1 while budgets can be checked; 0 while the shared ledger is unreachable "
            "and paid providers fail closed (reason budget_unavailable).",
        )
        available.add_metric([], 0 if book.blocked else 1)
        yield available
        yield CounterMetricFamily(
            "aegis_budget_unavailable_refusals",
            "Budget checks answered budget_unavailable (paid provider skipped or refused).",
            value=book.unavailable_refusals,
        )
        notified = CounterMetricFamily(
            "aegis_budget_notify_exceeded",
            "Calls that went ahead although a Notify budget could not cover them, by "
            "budget key (Scope/namespace/name).",
            labels=["budget"],
        )
        for budget, count in sorted(book.notified.items()):
            notified.add_metric([budget], count)
        yield notified
        yield CounterMetricFamily(
            "aegis_ledger_rows_written", "Ledger rows committed.", value=ledger.rows_written
        )
        yield CounterMetricFamily(
            "aegis_ledger_rows_recovered",
            "Rows found in the spool at start and replayed.",
            value=ledger.rows_recovered,
        )
        yield CounterMetricFamily(
            "aegis_ledger_rows_dropped",
            "Rows lost (no spool and the queue overflowed, or appended after close).",
            value=ledger.rows_dropped,
        )
        spool = ledger.spool
        if spool is not None:
            yield GaugeMetricFamily(
                "aegis_ledger_spool_bytes",
                "Size of the spool (rows not yet confirmed by the database).",
                value=spool.size_bytes,
            )
            ledger.binder.refresh()
            yield GaugeMetricFamily(
                "aegis_ledger_spool_held_rows",
                "Spooled rows kept aside because they belong to another ledger (never "
                "written to this one; inspect or discard: aegis ledger spool).",
                value=ledger.binder.held_rows,
            )
        if source is None:
            return
        statements = CounterMetricFamily(
            "aegis_budget_lease_statements",
            "Lease statements sent to PostgreSQL (one round trip each), by kind.",
            labels=["kind"],
        )
        for kind, count in sorted(source.statements.items()):
            statements.add_metric([kind], count)
        yield statements
        held = GaugeMetricFamily(
            "aegis_budget_lease_held_usd",
            "Money this sidecar holds on lease (spent or available), per budget.",
            labels=["budget", "budget_key", "period"],
        )
        remaining = GaugeMetricFamily(
            "aegis_budget_shared_remaining_usd",
            "The budget's money not leased to any sidecar, as last seen.",
            labels=["budget", "budget_key", "period"],
        )
        for slot in source.describe():
            held.add_metric([slot["budget"], slot["key"], slot["period"]], float(slot["held"]))
            if slot["remaining"] is not None:
                remaining.add_metric(
                    [slot["budget"], slot["key"], slot["period"]], float(slot["remaining"])
                )
        yield held
        yield remaining
