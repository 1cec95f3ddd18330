"""Calls of the budget-lease functions (PostgreSQL, migration 0002), one round trip each.

Each call is a single ``SELECT`` of a SECURITY DEFINER function run in autocommit
mode: the function's statements form one short transaction that locks the
budget's period row for microseconds, never across an LLM call.
See :mod:`aegis.sidecar.budgets.leases` for the policy that decides when to call them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from ..contract.money import ZERO, quantize_usd, usd_or_zero

_TAKE = text(
    "SELECT granted, lease_amount, lease_settled, lease_epoch, committed, limit_usd, active "
    "FROM aegis_lease_take(:budget, :period, :provider, :holder, :limit, :want, :need, :ttl)"
)
_RETURN = text(
    "SELECT returned, lease_amount, lease_settled, lease_epoch, committed "
    "FROM aegis_lease_return(:budget, :period, :holder, :amount, :close)"
)
_TAKEOVER = text("SELECT budget, period, freed FROM aegis_lease_takeover(:holder)")
_SET_LIMIT = text(
    "INSERT INTO budget_limits (budget, limit_usd, updated_at) VALUES (:budget, :limit, :now) "
    "ON CONFLICT (budget) DO UPDATE SET limit_usd = EXCLUDED.limit_usd, "
    "updated_at = EXCLUDED.updated_at"
)


@dataclass(frozen=True, slots=True)
class Grant:
    """What one take (or renewal: ``want == 0``) answered."""

    granted: Decimal  # added to this holder's lease now
    lease_amount: Decimal  # the holder's whole lease (spent + held) in the period
    lease_settled: Decimal  # what the holder's ledger rows charged so far
    epoch: int  # changes when someone else closed the lease
    committed: Decimal  # all holders' leases together
    limit: Decimal  # the limit the take was checked against
    active: int  # open leases with money in them, this one included

    @property
    def remaining(self) -> Decimal:
        """Money of the budget not committed to any holder."""
        return max(self.limit - self.committed, ZERO)


@dataclass(frozen=True, slots=True)
class Returned:
    returned: Decimal
    lease_amount: Decimal
    lease_settled: Decimal
    epoch: int
    committed: Decimal


async def take(
    connection: AsyncConnection,
    *,
    budget: str,
    period: str,
    provider: str,
    holder: str,
    limit: Decimal,
    want: Decimal,
    need: Decimal = ZERO,
    ttl_seconds: int = 60,
) -> Grant:
    """Add up to ``want`` (at least ``need``, else nothing) to the holder's lease
    and extend its TTL; reclaims expired leases of other holders on the way."""
    row = (
        await connection.execute(
            _TAKE,
            {
                "budget": budget,
                "period": period,
                "provider": provider,
                "holder": holder,
                "limit": quantize_usd(limit),
                "want": quantize_usd(want),
                "need": quantize_usd(need),
                "ttl": ttl_seconds,
            },
        )
    ).one()
    return Grant(
        granted=usd_or_zero(row.granted),
        lease_amount=usd_or_zero(row.lease_amount),
        lease_settled=usd_or_zero(row.lease_settled),
        epoch=int(row.lease_epoch),
        committed=usd_or_zero(row.committed),
        limit=usd_or_zero(row.limit_usd),
        active=int(row.active),
    )


async def give_back(
    connection: AsyncConnection,
    *,
    budget: str,
    period: str,
    holder: str,
    amount: Decimal,
    close: bool = False,
) -> Returned:
    """Return up to ``amount`` of unspent lease money (never settled money)."""
    row = (
        await connection.execute(
            _RETURN,
            {
                "budget": budget,
                "period": period,
                "holder": holder,
                "amount": quantize_usd(amount),
                "close": close,
            },
        )
    ).one()
    return Returned(
        returned=usd_or_zero(row.returned),
        lease_amount=usd_or_zero(row.lease_amount),
        lease_settled=usd_or_zero(row.lease_settled),
        epoch=int(row.lease_epoch or 0),
        committed=usd_or_zero(row.committed),
    )


async def takeover(connection: AsyncConnection, holder: str) -> list[tuple[str, str, Decimal]]:
    """Close a previous life's leases at what they settled (after its spool replay)."""
    result = await connection.execute(_TAKEOVER, {"holder": holder})
    return [(budget, period, usd_or_zero(freed)) for budget, period, freed in result]


async def set_limit(
    connection: AsyncConnection, budget: str, limit: Decimal, now: datetime | None = None
) -> None:
    """The operator's limit for ``budget`` (operator role; sidecars cannot write it)."""
    await connection.execute(
        _SET_LIMIT,
        {"budget": budget, "limit": quantize_usd(limit), "now": now or datetime.now(UTC)},
    )
