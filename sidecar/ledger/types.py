"""Column types that keep money exact and timestamps in UTC on every backend.

Why not plain ``Numeric``: SQLite has no decimal storage class. A ``NUMERIC``
column there holds non-integers as IEEE doubles, and ``SUM()`` over ``TEXT``
converts to doubles too, so a month of sub-cent costs would not add up exactly.
On SQLite money is therefore stored as INTEGER micro-dollars: ``SUM()`` is exact
64-bit integer arithmetic (it raises on overflow at ~9.2e12 USD instead of
rounding), compact, and indexable. On PostgreSQL it is ``NUMERIC(18, 6)``. Both
hold exactly six decimal places, so the two backends agree to the micro-dollar,
and Python only ever sees ``Decimal``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import BigInteger, DateTime, Dialect, Numeric
from sqlalchemy.types import TypeDecorator, TypeEngine

from ..contract.money import (
    MONEY_PRECISION,
    MONEY_SCALE,
    micro_usd,
    quantize_usd,
    storable_usd,
    usd_of_micro,
)


class Money(TypeDecorator[Decimal]):
    """USD as ``Decimal``: NUMERIC(18, 6), or INTEGER micro-dollars on SQLite."""

    impl = Numeric(MONEY_PRECISION, MONEY_SCALE, asdecimal=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(BigInteger())
        return dialect.type_descriptor(Numeric(MONEY_PRECISION, MONEY_SCALE, asdecimal=True))

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if dialect.name == "sqlite":
            return micro_usd(value)
        return storable_usd(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        if dialect.name == "sqlite":
            return usd_of_micro(value)
        return quantize_usd(Decimal(value))


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware instant, stored as UTC (``timestamptz`` on PostgreSQL).

    SQLite keeps no offset, so values are normalised to UTC on the way in and
    tagged as UTC on the way out; naive datetimes are refused because their
    meaning depends on the machine's local time zone.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("ledger timestamps must be timezone-aware")
        utc = value.astimezone(UTC)
        return utc.replace(tzinfo=None) if dialect.name == "sqlite" else utc

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)
