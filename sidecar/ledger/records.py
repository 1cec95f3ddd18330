"""A ledger row as the request path builds it, and the table it goes to.

Nothing here needs a database library: the sidecar builds a :class:`LedgerRecord`
per request and hands it to :class:`~aegis.sidecar.ledger.LedgerStore`. The table's
SQLAlchemy model (:class:`~aegis.sidecar.ledger.models.LedgerEntry`, for migrations
and reports) has the same columns; a test holds :data:`COLUMNS` and
:data:`STRING_LENGTHS` to it.
"""

from __future__ import annotations

from dataclasses import field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from ..contract import Arm
from ..values import valueclass

__all__ = ["COLUMNS", "SCHEMA", "STRING_LENGTHS", "LedgerRecord", "Status"]

#: PostgreSQL: the schema the ledger's tables live in (migration 0003), which no
#: tenant may create objects in. The models carry no schema (SQLite has none); the
#: PostgreSQL engines map it (:func:`aegis.sidecar.ledger.db.create_engine`).
SCHEMA = "aegis"


class Status(StrEnum):
    """How the request ended (``refused``: by the sidecar, e.g. budget or privacy)."""

    OK = "ok"
    ERROR = "error"
    REFUSED = "refused"
    CANCELLED = "cancelled"


#: The ledger table's columns, in order.
COLUMNS: tuple[str, ...] = (
    "request_id",
    "created_at",
    "period",
    "namespace",
    "pod",
    "route",
    "rule",
    "arm",
    "provider",
    "model",
    "data_class",
    "tokens_in",
    "tokens_out",
    "cost_usd",
    "latency_ms",
    "ttft_ms",
    "status",
    "http_status",
    "fallback_reason",
    "attempts",
    "declared_class",
    "pii_detectors",
    "privacy_action",
    "workload",
    "service_account",
)
#: The columns that hold text, and their ``VARCHAR`` lengths.
STRING_LENGTHS: tuple[tuple[str, int], ...] = (
    ("request_id", 128),
    ("period", 7),
    ("namespace", 63),
    ("pod", 253),
    ("route", 253),
    ("rule", 63),
    ("arm", 16),
    ("provider", 63),
    ("model", 128),
    ("data_class", 32),
    ("status", 16),
    ("fallback_reason", 64),
    ("declared_class", 32),
    ("pii_detectors", 255),
    ("privacy_action", 16),
    ("workload", 320),
    ("service_account", 253),
)


@valueclass(kw_only=True)
class LedgerRecord:
    """What the request path hands to :meth:`LedgerStore.append`.

    A plain dataclass rather than an ORM instance: building one costs a few
    microseconds on the hot path and it is written with Core, not the unit of work.
    ``period`` comes from the budget reservation (the month the money was
    reserved in), not from ``created_at``.
    """

    request_id: str
    created_at: datetime
    period: str
    namespace: str
    pod: str
    route: str
    rule: str | None
    arm: Arm | str
    provider: str
    model: str
    data_class: str
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: Decimal = field(default_factory=Decimal)
    latency_ms: int = 0
    ttft_ms: int | None = None
    status: Status | str = Status.OK
    http_status: int = 200
    fallback_reason: str | None = None
    attempts: int = 1
    declared_class: str | None = None
    pii_detectors: str | None = None
    privacy_action: str | None = None
    workload: str | None = None
    service_account: str | None = None

    def as_params(self) -> dict[str, Any]:
        """Column values for an INSERT: enums as plain strings, and strings cut to
        their column's length, so that PostgreSQL (which enforces ``VARCHAR(n)``)
        and SQLite (which does not) store the same row instead of one refusing it."""
        params = {name: getattr(self, name) for name in COLUMNS}
        params["arm"] = str(self.arm)
        params["status"] = str(self.status)
        for name, length in STRING_LENGTHS:
            value = params[name]
            if value is not None and len(value) > length:
                params[name] = value[:length]
        return params
