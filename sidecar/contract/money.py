"""Money: exact decimal US dollars at the ledger's resolution of one micro-dollar.

Every amount the sidecar and the operator handle is a :class:`~decimal.Decimal`
(never a float), held to six decimal places as the ledger stores it
(``NUMERIC(18, 6)`` on PostgreSQL, integer micro-dollars on SQLite).
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

MONEY_PRECISION = 18
MONEY_SCALE = 6
#: One micro-dollar, the ledger's resolution.
MICRO = Decimal(1).scaleb(-MONEY_SCALE)
#: One cent, the resolution people read spend and limits in.
CENT = Decimal("0.01")
#: Zero dollars at the ledger's scale (prints as ``0.000000``).
ZERO = Decimal("0.000000")
#: The largest amount a ledger column holds.
MAX_MONEY = Decimal(10) ** (MONEY_PRECISION - MONEY_SCALE) - MICRO


def quantize_usd(amount: Decimal, rounding: str = ROUND_HALF_UP) -> Decimal:
    """Round ``amount`` to the ledger's resolution (one micro-dollar).

    ``ROUND_HALF_UP`` is the rounding PostgreSQL applies when it casts to
    ``NUMERIC(18, 6)``, so a value rounded here is stored unchanged on both
    backends; the budget book rounds settled costs with this same function so
    that its totals equal the ledger's sums.
    """
    if not amount.is_finite():
        raise ValueError(f"money must be finite, got {amount}")
    return amount.quantize(MICRO, rounding=rounding)


def checked_usd(amount: Decimal | int, rounding: str = ROUND_HALF_UP) -> Decimal:
    """``amount`` as money a budget may hold: exact (``Decimal`` or ``int``, never a
    float or a bool), not negative, rounded to the micro-dollar with ``rounding``."""
    if not isinstance(amount, Decimal | int) or isinstance(amount, bool):
        raise TypeError(f"money must be Decimal, got {type(amount).__name__}")
    value = quantize_usd(Decimal(amount), rounding)
    if value < 0:
        raise ValueError(f"money must not be negative, got {amount}")
    return value


def storable_usd(amount: Decimal | int) -> Decimal:
    """``amount`` as a ledger column holds it: exact (``Decimal`` or ``int``; a float
    would already have lost exactness), rounded to the micro-dollar, within
    ``NUMERIC(18, 6)``."""
    if not isinstance(amount, Decimal | int):
        raise TypeError(f"money must be Decimal or int, got {type(amount).__name__}")
    value = quantize_usd(Decimal(amount))
    if abs(value) > MAX_MONEY:
        raise ValueError(f"money out of range for NUMERIC(18, 6): {value}")
    return value


def micro_usd(amount: Decimal | int) -> int:
    """``amount`` as integer micro-dollars, SQLite's money column (checked as
    :func:`storable_usd` checks it)."""
    return int(storable_usd(amount).scaleb(MONEY_SCALE))


def usd_of_micro(value: int) -> Decimal:
    """Integer micro-dollars (SQLite's money column) as USD."""
    return Decimal(int(value)).scaleb(-MONEY_SCALE)


def usd_or_zero(value: Decimal | int | None) -> Decimal:
    """A database value (``None`` for no rows) at the ledger's resolution."""
    return ZERO if value is None else quantize_usd(Decimal(value))


def cents(amount: Decimal) -> str:
    """``amount`` to the cent, as people read limits and spend (``12.35``)."""
    return str(amount.quantize(CENT, ROUND_HALF_UP))


def micros(amount: Decimal, *, grouped: bool = False) -> str:
    """``amount`` to the micro-dollar, as the ledger holds it (``0.000140``);
    ``grouped`` separates thousands for tables people read (``1,234.000140``)."""
    if grouped:
        return f"{quantize_usd(amount):,.6f}"
    return str(quantize_usd(amount))
