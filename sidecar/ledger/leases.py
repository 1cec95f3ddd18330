"""Calls of the tenants' budget-lease functions (PostgreSQL, migrations 0003 and 0008),
one round trip each.

Each call is a single ``SELECT`` of a SECURITY DEFINER function in schema ``aegis``,
run in autocommit mode: the function's statements form one short transaction that
locks the budget's period row for microseconds, never across an LLM call. The
database knows the caller from its login role (one per namespace): a holder must be
``<namespace>/<pod>`` of that namespace, a budget must be granted to it, and the
limit is the operator's (``aegis.budget_limits``), never the caller's.
See :mod:`aegis.sidecar.budgets.leases` for the policy that decides when to call them.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from ..contract import BudgetKey, BudgetScope
from ..contract.money import ZERO, quantize_usd, usd_or_zero
from .database import Connection, DatabaseError

# Typed parameters: each call resolves to exactly one function (lease_take also has
# the 8-argument form of 0003) and asyncpg encodes them as the function declares.
_TAKE = (
    "SELECT granted, lease_amount, lease_settled, lease_epoch, committed, limit_usd, active, "
    "lease_unknown FROM aegis.lease_take($1::text, $2::text, $3::text, $4::text, $5::text, "
    "$6::numeric, $7::numeric, $8::integer, $9::numeric, $10::integer)"
)
_RETURN = (
    "SELECT returned, lease_amount, lease_settled, lease_epoch, committed, lease_unknown "
    "FROM aegis.lease_return($1::text, $2::text, $3::text, $4::text, $5::text, $6::numeric, "
    "$7::boolean)"
)
_TAKEOVER = (
    "SELECT budget_scope, budget_namespace, budget_name, period, freed "
    "FROM aegis.lease_takeover($1::text)"
)
_INSUFFICIENT_PRIVILEGE = "42501"


class NotGranted(Exception):
    """The database refused the call: the budget is not granted to this namespace (or
    does not exist: the two are not told apart), or the holder is not of it."""


@dataclass(frozen=True, slots=True)
class Grant:
    """What one take (or renewal: ``want == 0``) answered."""

    granted: Decimal  # added to this holder's lease now
    lease_amount: Decimal  # the holder's whole lease (spent + held) in the period
    lease_settled: Decimal  # what the holder's ledger rows charged so far
    epoch: int  # changes when someone else closed the lease
    committed: Decimal  # all holders' leases together
    limit: Decimal  # the operator's limit the take was checked against
    active: int  # open leases with money in them, this one included
    unknown: Decimal = ZERO  # kept charged for calls of earlier lives of unknown outcome

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
    unknown: Decimal = ZERO  # kept charged for calls of unknown outcome: never returned


def _key(budget: BudgetKey) -> tuple[str, str, str]:
    return budget.scope.value, budget.namespace, budget.name


async def take(
    connection: Connection,
    *,
    budget: BudgetKey,
    period: str,
    holder: str,
    want: Decimal,
    need: Decimal = ZERO,
    ttl_seconds: int = 60,
    spare: Decimal = ZERO,
    max_call_seconds: int = 0,
) -> Grant:
    """Add up to ``want`` (at least ``need``, else nothing) to the holder's lease
    and extend its TTL; reclaims expired leases of other holders on the way.

    ``spare``: lease money (after this take, were ``want`` granted in full) the
    holder will not commit before its next take or renewal: if it dies, the rest
    of its lease (its *exposure*) stays charged as money of calls of unknown
    outcome. ``max_call_seconds``: its longest call (per-request deadline); its
    lease is reclaimed only that long after expiry.
    :class:`NotGranted` when the budget is not this namespace's to spend."""
    try:
        row = await connection.fetchone(
            _TAKE,
            *_key(budget),
            period,
            holder,
            quantize_usd(want),
            quantize_usd(need),
            ttl_seconds,
            quantize_usd(spare),
            max(max_call_seconds, 0),
        )
    except DatabaseError as error:
        if error.sqlstate == _INSUFFICIENT_PRIVILEGE:
            raise NotGranted(str(error)) from None
        raise
    granted, amount, settled, epoch, committed, limit, active, unknown = row
    return Grant(
        granted=usd_or_zero(granted),
        lease_amount=usd_or_zero(amount),
        lease_settled=usd_or_zero(settled),
        epoch=int(epoch),
        committed=usd_or_zero(committed),
        limit=usd_or_zero(limit),
        active=int(active),
        unknown=usd_or_zero(unknown),
    )


async def give_back(
    connection: Connection,
    *,
    budget: BudgetKey,
    period: str,
    holder: str,
    amount: Decimal,
    close: bool = False,
) -> Returned:
    """Return up to ``amount`` of unspent lease money (never settled money)."""
    row = await connection.fetchone(
        _RETURN, *_key(budget), period, holder, quantize_usd(amount), bool(close)
    )
    returned, lease_amount, settled, epoch, committed, unknown = row
    return Returned(
        returned=usd_or_zero(returned),
        lease_amount=usd_or_zero(lease_amount),
        lease_settled=usd_or_zero(settled),
        epoch=int(epoch or 0),
        committed=usd_or_zero(committed),
        unknown=usd_or_zero(unknown),
    )


async def takeover(connection: Connection, holder: str) -> list[tuple[BudgetKey, str, Decimal]]:
    """Close a previous life's leases (after its spool replay) at what they settled
    plus its exposure (calls of unknown outcome); returns the money freed per lease."""
    rows = await connection.fetch(_TAKEOVER, holder)
    return [
        (BudgetKey(BudgetScope(scope), namespace, name), period, usd_or_zero(freed))
        for scope, namespace, name, period, freed in rows
    ]
