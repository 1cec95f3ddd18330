"""The ledger schema: one row per request, money as exact decimals.

The same models serve SQLite (standalone) and PostgreSQL (cluster), so every
type here is dialect-neutral: strings with CHECK constraints instead of native
enums (no ``ALTER TYPE`` in later migrations), :class:`Money` for USD and
:class:`UTCDateTime` for instants. Prompt and completion text are never stored:
there is deliberately no column that could hold them.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import cast

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Table,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from ..contract import Arm
from .records import COLUMNS, SCHEMA, STRING_LENGTHS, LedgerRecord, Status
from .types import Money, UTCDateTime

# Deterministic constraint names: Alembic needs them to alter or drop
# constraints later, and they must be the same on both backends.
__all__ = [
    "BUDGET_LEASES",
    "BUDGET_LIMITS",
    "BUDGET_PERIODS",
    "BUDGET_SPENDERS",
    "COLUMNS",
    "LEDGER",
    "NAMING_CONVENTION",
    "SCHEMA",
    "STRING_LENGTHS",
    "SUMMARY",
    "TENANTS",
    "Arm",  # the arm column's values (defined in the contract)
    "Base",
    "BudgetKeyColumns",
    "BudgetLease",
    "BudgetLimit",
    "BudgetPeriod",
    "BudgetSpender",
    "LeaseState",
    "LedgerEntry",
    "LedgerRecord",
    "LedgerSummary",
    "Status",
    "Tenant",
]

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def _in(column: str, values: type[StrEnum]) -> str:
    return f"{column} IN ({', '.join(repr(v.value) for v in values)})"


class LedgerEntry(Base):
    """One request. ``request_id`` is the primary key and the idempotency key.

    Indexes (each justified by a reader, every one costs the write path; spend per
    provider and month is read from ``ledger_summary``, migration 0012):
    - ``(route, arm, created_at)``: per-arm rollout statistics over a window;
    - ``(period, created_at)``: monthly export and report.
    """

    __tablename__ = "ledger_entries"

    request_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    period: Mapped[str] = mapped_column(String(7))
    namespace: Mapped[str] = mapped_column(String(63))
    pod: Mapped[str] = mapped_column(String(253))
    route: Mapped[str] = mapped_column(String(253))
    rule: Mapped[str | None] = mapped_column(String(63))
    arm: Mapped[str] = mapped_column(String(16))
    provider: Mapped[str] = mapped_column(String(63))
    model: Mapped[str] = mapped_column(String(128))
    data_class: Mapped[str] = mapped_column(String(32))
    tokens_in: Mapped[int] = mapped_column(Integer)
    tokens_out: Mapped[int] = mapped_column(Integer)
    cost_usd: Mapped[Decimal] = mapped_column(Money())
    latency_ms: Mapped[int] = mapped_column(Integer)
    ttft_ms: Mapped[int | None] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    http_status: Mapped[int] = mapped_column(SmallInteger)
    fallback_reason: Mapped[str | None] = mapped_column(String(64))
    attempts: Mapped[int] = mapped_column(SmallInteger)
    # Privacy audit (migration 0004): the declared class, the detectors that found
    # something (names, never values) and what privacy did.
    declared_class: Mapped[str | None] = mapped_column(String(32))
    pii_detectors: Mapped[str | None] = mapped_column(String(255))
    privacy_action: Mapped[str | None] = mapped_column(String(16))
    # Attribution (migration 0006): the pod's owning workload (``Deployment/web``,
    # ``StatefulSet/db``, ``CronJob/nightly``, ``Pod/<name>``…) and its ServiceAccount,
    # as the injector handed them to the sidecar; NULL on rows written before.
    workload: Mapped[str | None] = mapped_column(String(320))
    service_account: Mapped[str | None] = mapped_column(String(253))

    __table_args__ = (
        CheckConstraint(_in("arm", Arm), name="arm"),
        CheckConstraint(_in("status", Status), name="status"),
        CheckConstraint("cost_usd >= 0", name="cost_nonnegative"),
        CheckConstraint("tokens_in >= 0 AND tokens_out >= 0", name="tokens_nonnegative"),
        # On PostgreSQL it also carries status, latency and cost (migration 0002),
        # so the rollout statistics are answered from the index alone.
        Index(
            None,
            "route",
            "arm",
            "created_at",
            postgresql_include=["status", "latency_ms", "cost_usd"],
        ),
        Index(None, "period", "created_at"),
    )


LEDGER = cast(Table, LedgerEntry.__table__)


KEY = ("budget_scope", "budget_namespace", "budget_name")
SCOPE_CHECK = (
    "budget_scope IN ('Namespace', 'Cluster') "
    "AND (budget_scope = 'Namespace' OR budget_namespace = '')"
)


class BudgetKeyColumns:
    """A budget's identity, ``(scope, namespace, name)``: see
    :class:`~aegis.sidecar.contract.BudgetKey` (``''`` is a cluster budget's namespace,
    and that of budgets keyed by name before migration 0003 until the operator adopts
    them)."""

    budget_scope: Mapped[str] = mapped_column(String(9), primary_key=True)
    budget_namespace: Mapped[str] = mapped_column(String(63), primary_key=True)
    budget_name: Mapped[str] = mapped_column(String(63), primary_key=True)


class BudgetLimit(BudgetKeyColumns, Base):
    """A budget's limit and provider as the operator set them from the ``LLMBudget``.

    The only limit a lease is checked against: sidecars pass none. Written by the
    operator's control role (``aegis.set_budget``) for every budget; sidecars can
    read nothing of it but their own budgets' figures through the lease functions.
    """

    __tablename__ = "budget_limits"

    provider: Mapped[str] = mapped_column(String(63))
    limit_usd: Mapped[Decimal] = mapped_column(Money())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (
        CheckConstraint("limit_usd >= 0", name="limit_nonnegative"),
        CheckConstraint(SCOPE_CHECK, name="budget_scope"),
    )


class BudgetSpender(BudgetKeyColumns, Base):
    """A namespace whose sidecars may spend the budget (``*``: every namespace)."""

    __tablename__ = "budget_spenders"

    namespace: Mapped[str] = mapped_column(String(63), primary_key=True)

    __table_args__ = (
        ForeignKeyConstraint(
            list(KEY),
            [f"budget_limits.{c}" for c in KEY],
            name="fk_budget_spenders_budget_limits",
            ondelete="CASCADE",
            onupdate="CASCADE",
        ),
    )


class Tenant(Base):
    """A tenant login role and the one namespace it acts for (written by the owner's
    ``aegis.ensure_tenant``; read by every tenant function as ``session_user``)."""

    __tablename__ = "tenants"

    role_name: Mapped[str] = mapped_column(String(63), primary_key=True)
    namespace: Mapped[str] = mapped_column(String(63), unique=True)
    active: Mapped[bool] = mapped_column(Boolean)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class LedgerIdentity(Base):
    """The ledger's own id (one row, written by migration 0005): the spool of a
    sidecar is bound to it, so rows replay only into the ledger they were written for."""

    __tablename__ = "ledger_identity"

    ledger_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class BudgetPeriod(BudgetKeyColumns, Base):
    """One budget in one period (a day, an ISO week or a month: its key, migration
    0009), shared by every sidecar that spends it.

    ``committed_usd`` is the sum of all holders' lease amounts: money spent or
    handed to a sidecar to spend. Takes never push it above the limit; only
    ``overdraft_usd`` (spend that arrived beyond a lease) can, and is counted.
    """

    __tablename__ = "budget_periods"

    period: Mapped[str] = mapped_column(String(10), primary_key=True)  # any period key
    provider: Mapped[str] = mapped_column(String(63))
    limit_usd: Mapped[Decimal] = mapped_column(Money())
    committed_usd: Mapped[Decimal] = mapped_column(Money())
    overdraft_usd: Mapped[Decimal] = mapped_column(Money())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (
        CheckConstraint(
            "committed_usd >= 0 AND overdraft_usd >= 0 AND limit_usd >= 0",
            name="money_nonnegative",
        ),
        CheckConstraint(SCOPE_CHECK, name="budget_scope"),
    )


class LeaseState(StrEnum):
    OPEN = "open"  # the holder renews it
    CLOSED = "closed"  # returned, taken over after a restart, or reclaimed


class BudgetLease(BudgetKeyColumns, Base):
    """The slice of one budget-period held by one sidecar (``holder``: namespace/pod).

    ``amount_usd``: money committed to the holder (spent or still held);
    ``settled_usd``: what its ledger rows charged so far (never above the amount);
    ``epoch`` changes whenever someone else closed the lease, so the holder can
    tell that its local view is stale.
    """

    __tablename__ = "budget_leases"

    period: Mapped[str] = mapped_column(String(10), primary_key=True)
    holder: Mapped[str] = mapped_column(String(320), primary_key=True)
    amount_usd: Mapped[Decimal] = mapped_column(Money())
    settled_usd: Mapped[Decimal] = mapped_column(Money())
    state: Mapped[str] = mapped_column(String(8))
    epoch: Mapped[int] = mapped_column(BigInteger)
    renewed_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # Killed pods (migration 0008): what the holder may have committed until its next
    # report (NULL: all of it), its maximum call time, money kept charged for calls of
    # unknown outcome (final), and when a reclaim closed the lease (until its holder
    # takes over or comes back: all it holds is unknown-outcome money then).
    exposure_usd: Mapped[Decimal | None] = mapped_column(Money())
    max_call_seconds: Mapped[int] = mapped_column(Integer, server_default="0")
    unknown_usd: Mapped[Decimal] = mapped_column(Money(), server_default="0")
    reclaimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (
        ForeignKeyConstraint(
            [*KEY, "period"],
            [f"budget_periods.{c}" for c in (*KEY, "period")],
            name="fk_budget_leases_budget_periods",
            ondelete="CASCADE",
            onupdate="CASCADE",
        ),
        CheckConstraint(_in("state", LeaseState), name="state"),
        CheckConstraint(
            "settled_usd >= 0 AND settled_usd <= amount_usd", name="settled_within_amount"
        ),
        CheckConstraint(SCOPE_CHECK, name="budget_scope"),
        Index(None, "holder"),
    )


class LedgerSummary(Base):
    """The ledger's summary: requests, errors, refusals, tokens and cost of one
    (period, namespace, route, provider, model); ``period`` is the ledger row's (the
    month its money was reserved in).

    One row per key (migration 0007), kept in the same transaction as the inserts by a
    trigger on the ledger (PostgreSQL: one statement-level trigger per batch; SQLite:
    per row), counting only rows really inserted (a replay adds nothing). Reports and
    budget figures read it instead of scanning raw rows, and it keeps the months whose
    raw rows retention exported and dropped.
    """

    __tablename__ = "ledger_summary"

    period: Mapped[str] = mapped_column(String(7), primary_key=True)
    namespace: Mapped[str] = mapped_column(String(63), primary_key=True)
    route: Mapped[str] = mapped_column(String(253), primary_key=True)
    provider: Mapped[str] = mapped_column(String(63), primary_key=True)
    model: Mapped[str] = mapped_column(String(128), primary_key=True)
    requests: Mapped[int] = mapped_column(BigInteger)
    errors: Mapped[int] = mapped_column(BigInteger)
    refused: Mapped[int] = mapped_column(BigInteger)
    tokens_in: Mapped[int] = mapped_column(BigInteger)
    tokens_out: Mapped[int] = mapped_column(BigInteger)
    cost_usd: Mapped[Decimal] = mapped_column(Money())


SUMMARY = cast(Table, LedgerSummary.__table__)
BUDGET_PERIODS = cast(Table, BudgetPeriod.__table__)
BUDGET_LEASES = cast(Table, BudgetLease.__table__)
BUDGET_LIMITS = cast(Table, BudgetLimit.__table__)
BUDGET_SPENDERS = cast(Table, BudgetSpender.__table__)
TENANTS = cast(Table, Tenant.__table__)
