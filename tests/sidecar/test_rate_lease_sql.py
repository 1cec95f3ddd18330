"""``aegis.rate_lease`` and ``aegis.set_rate_limits`` on a real PostgreSQL.

The sum of the holders' slots never grows past the limit; a holder lowers its own
lease, a late (older) statement changes nothing, a fresh one never lowers and says
what the lease carried; a route's limit is its own namespace's only, a budget's only
for namespaces that may spend the budget, and the tenant role made by
``aegis.ensure_tenant`` may call it (and nothing else of the rate tables).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from aegis.sidecar.contract import BudgetKey, BudgetScope, RateUnit
from aegis.sidecar.ledger import control
from aegis.sidecar.ledger.database import Database, DatabaseError, open_database
from aegis.sidecar.ledger.db import create_engine
from aegis.sidecar.limits import PoolKey
from aegis.sidecar.limits.leases import LeaseAnswer, rate_lease
from tests.sidecar.tenancy import provision, set_budgets
from tests.sidecar.test_ledger_roles import Roles, roles, tenant

pytestmark = pytest.mark.postgres
__all__ = ["roles", "tenant"]  # fixtures used below

ROUTE = PoolKey("Route", "ns", "chat", RateUnit.REQUESTS)


@pytest.fixture
async def database(pg_url: str) -> AsyncIterator[Database]:
    await provision(pg_url, "ns", [("dash", "dashscope", "10")])
    database = open_database(pg_url)
    yield database
    await database.aclose()


class Seq:
    def __init__(self) -> None:
        self.value = 0

    def __call__(self) -> int:
        self.value += 1
        return self.value


async def lease(
    database: Database,
    holder: str,
    want: int,
    seq: int,
    *,
    key: PoolKey = ROUTE,
    need: int = 0,
    limit: int = 10,
    fresh: bool = False,
) -> LeaseAnswer:
    async with database.connect() as connection:
        return await rate_lease(
            connection,
            key,
            holder,
            seq=seq,
            want=want,
            need=need,
            limit=limit,
            ttl=60,
            fresh=fresh,
        )


async def committed(database: Database, key: PoolKey = ROUTE) -> tuple[int, int]:
    async with database.connect() as connection:
        [row] = await connection.fetch(
            "SELECT p.committed, (SELECT COALESCE(sum(l.amount), 0) FROM "
            "aegis.rate_leases l WHERE l.kind = p.kind AND l.namespace = p.namespace "
            "AND l.name = p.name AND l.unit = p.unit) FROM aegis.rate_pools p "
            "WHERE p.kind = $1 AND p.namespace = $2 AND p.name = $3 AND p.unit = $4",
            key.kind,
            key.namespace,
            key.name,
            key.unit.value,
        )
        return int(row[0]), int(row[1])


async def test_slots_are_shared_within_the_limit_and_given_back(database: Database) -> None:
    seq = Seq()
    a = await lease(database, "ns/a", 8, seq())
    assert (a.amount, a.committed, a.limit, a.applied) == (8, 8, 10, True)
    b = await lease(database, "ns/b", 8, seq())  # a fair share of the 2 left
    assert b.amount == 1 and b.committed == 9 and b.short == 0
    c = await lease(database, "ns/c", 5, seq(), need=1)
    assert c.amount == 1 and c.committed == 10  # the last one
    full = await lease(database, "ns/c", 5, seq(), need=1)
    assert full.amount == 1 and full.committed == 10  # no room
    lowered = await lease(database, "ns/a", 3, seq())
    assert lowered.amount == 3 and lowered.committed == 5 and lowered.short == 2
    c = await lease(database, "ns/c", 9, seq(), need=1)
    assert c.amount == 2  # a fair share: room 5 / (2 other holders + 1)
    assert await committed(database) == (6, 6)
    need = await lease(database, "ns/c", 9, seq(), need=5)
    assert need.amount == 2  # 4 left, 5 needed: nothing rather than too little
    assert await committed(database) == (6, 6)


async def test_a_late_statement_changes_nothing_and_fresh_never_lowers(
    database: Database,
) -> None:
    first = await lease(database, "ns/a", 6, 10)
    assert first.amount == 6
    late = await lease(database, "ns/a", 1, 9)  # sent before the take, arrived after
    assert not late.applied and late.amount == 6
    restarted = await lease(database, "ns/a", 2, 5, fresh=True)  # a new life, old slots
    assert restarted.applied and restarted.amount == 6 and restarted.carried == 6
    assert await committed(database) == (6, 6)


async def test_a_lowered_route_limit_grants_nothing_until_holders_give_back(
    database: Database,
) -> None:
    await lease(database, "ns/a", 8, 1)
    over = await lease(database, "ns/b", 4, 2, limit=5, need=1)
    assert over.amount == 0 and over.limit == 5
    await lease(database, "ns/a", 2, 3, limit=5)
    again = await lease(database, "ns/b", 4, 4, limit=5, need=1)
    assert again.amount == 1  # room 3, a fair share of it with one other holder


async def test_tenancy_another_namespaces_route_and_budgets_it_may_not_spend(
    database: Database, pg_url: str
) -> None:
    other = PoolKey("Route", "other", "chat", RateUnit.REQUESTS)
    with pytest.raises(DatabaseError, match="not granted to namespace ns"):
        await lease(database, "ns/a", 5, 1, key=other)
    with pytest.raises(DatabaseError, match="a lease holder of namespace ns"):
        await lease(database, "other/a", 5, 2, key=other)
    budget = PoolKey("Budget", "ns", "dash", RateUnit.TOKENS)
    with pytest.raises(DatabaseError, match="not granted"):  # no rate limit written yet
        await lease(database, "ns/a", 5, 3, key=budget)
    await set_budgets(pg_url, "team-b", [("shared", "dashscope", "10")], spenders=["team-b"])
    engine = create_engine(pg_url, isolation_level="AUTOCOMMIT")  # the operator's side
    try:
        async with engine.connect() as connection:
            for key in (BudgetKey(BudgetScope.NAMESPACE, "ns", "dash"), _team_b()):
                await control.set_rate_limits(
                    connection, key, requests_per_minute=None, tokens_per_minute=1000
                )
    finally:
        await engine.dispose()
    granted = await lease(database, "ns/a", 400, 4, key=budget, limit=999_999)
    assert granted.amount == 400 and granted.limit == 1000  # the operator's limit
    foreign = PoolKey("Budget", "team-b", "shared", RateUnit.TOKENS)
    with pytest.raises(DatabaseError, match="not granted to namespace ns"):
        await lease(database, "ns/a", 5, 5, key=foreign)
    unlimited = PoolKey("Budget", "ns", "dash", RateUnit.REQUESTS)
    with pytest.raises(DatabaseError, match="not granted"):  # no requests limit on it
        await lease(database, "ns/a", 5, 6, key=unlimited)


def _team_b() -> BudgetKey:
    return BudgetKey(BudgetScope.NAMESPACE, "team-b", "shared")


async def test_the_tenant_role_may_lease_its_routes_slots_and_nothing_more(
    tenant: tuple[Roles, str],
) -> None:
    roles, role = tenant
    database = open_database(roles.url(role))
    own = PoolKey("Route", roles.namespace, "chat", RateUnit.REQUESTS)
    try:
        answer = await lease(database, f"{roles.namespace}/pod", 3, 1, key=own)
        assert answer.amount == 3
        with pytest.raises(DatabaseError, match="not granted"):
            await lease(database, f"{roles.namespace}/pod", 3, 2, key=ROUTE)
        for sql in (
            "SELECT * FROM aegis.rate_leases",
            "UPDATE aegis.rate_pools SET committed = 0",
            "SELECT aegis.set_rate_limits('Namespace', 'ns', 'dash', 1, 1)",
        ):
            with pytest.raises(DatabaseError, match="permission denied"):
                async with database.connect() as connection:
                    await connection.execute(sql)
    finally:
        await database.aclose()
