"""What the attacks reach: the ledger as installed, and the calls a namespace's DSN allows.

One module so the attacks read the same against any version of the ledger: to check
that an attack test fails on an older ledger, this module alone is rewritten for that
ledger's functions (e.g. in a scratch worktree of the older commit) and the tests run
unchanged.

The installation: an owner migrates (CREATE on the database, CREATEROLE), the
operator's control role writes each budget's limit and makes one login role per
namespace; the namespaces' sidecars connect with their namespace's DSN.

The attacks hold SQLAlchemy connections (for their own statements); the sidecar's
calls (leases, ledger writes) run on the same connections, as the sidecar's driver
layer (:mod:`aegis.sidecar.ledger.database`) runs them.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from aegis.sidecar.contract import BudgetKey, BudgetScope
from aegis.sidecar.ledger import control, leases
from aegis.sidecar.ledger.db import create_engine
from aegis.sidecar.ledger.migrate import migrate_async
from aegis.sidecar.ledger.models import Arm, LedgerRecord, Status
from aegis.sidecar.ledger.roles import apply_grants
from aegis.sidecar.ledger.spool import encode_body
from aegis.sidecar.ledger.writes import write_postgres
from tests.controlplane.postgres import PostgresServer
from tests.sidecar.shared_helpers import driver_of

PERIOD = "2026-11"
PROVIDER = "openai"
LIMIT = Decimal(5)


@dataclass
class Installed:
    """The ledger of one test: its owner's URL and each namespace's DSN."""

    owner_url: str
    dsn: dict[str, str]  # namespace -> the DSN its sidecars hold
    roles: list[str]  # roles to drop afterwards

    def budget(self, namespace: str) -> str:
        """The name of ``namespace``'s budget (one per namespace, same provider)."""
        return "monthly"


def as_role(url: str, role: str, password: str = "") -> str:
    credentials = f"{role}:{password}" if password else role
    return url.replace("postgresql://postgres@", f"postgresql://{credentials}@")


def key(namespace: str, name: str) -> BudgetKey:
    return BudgetKey(BudgetScope.NAMESPACE, namespace, name)


async def install(postgres: PostgresServer, url: str, namespaces: list[str]) -> Installed:
    """Migrate as a non-superuser owner, grant the control role, write one budget of
    ``LIMIT`` USD per namespace (as the operator does) and make each namespace's role."""
    database = url.rsplit("/", 1)[1]
    suffix = uuid.uuid4().hex[:8]
    owner, control_role = f"owner_{suffix}", f"control_{suffix}"
    postgres.psql(f"CREATE ROLE {owner} LOGIN CREATEROLE")
    postgres.psql(f"CREATE ROLE {control_role} LOGIN")
    postgres.psql(f"GRANT CREATE ON DATABASE {database} TO {owner}", database)
    postgres.psql(f"ALTER SCHEMA public OWNER TO {owner}", database)
    owner_url = as_role(url, owner)
    await migrate_async(owner_url)
    engine = create_engine(owner_url, isolation_level="AUTOCOMMIT")
    async with engine.connect() as connection:
        await apply_grants(connection, control=control_role)
    await engine.dispose()
    dsn: dict[str, str] = {}
    tenants: list[str] = []
    engine = create_engine(as_role(url, control_role), isolation_level="AUTOCOMMIT")
    async with engine.connect() as connection:
        for namespace in namespaces:
            await control.set_budget(
                connection,
                key(namespace, "monthly"),
                provider=PROVIDER,
                limit=LIMIT,
                spenders=[namespace],
            )
            password = control.new_password()
            role = await control.ensure_tenant(connection, namespace, password)
            tenants.append(role)
            dsn[namespace] = as_role(url, role, password)
    await engine.dispose()
    return Installed(owner_url, dsn, [*tenants, control_role, owner])


async def take(
    connection: AsyncConnection, budget_namespace: str, holder: str, want: Decimal
) -> Decimal:
    """Ask for ``want`` USD of ``budget_namespace``'s budget as ``holder``; the grant."""
    grant = await leases.take(
        await driver_of(connection),
        budget=key(budget_namespace, "monthly"),
        period=PERIOD,
        holder=holder,
        want=want,
    )
    return grant.granted


async def read_budget(
    connection: AsyncConnection, budget_namespace: str, holder: str
) -> tuple[Decimal, Decimal]:
    """What a renewal (want 0) tells about a budget: (committed, limit)."""
    grant = await leases.take(
        await driver_of(connection), budget=key(budget_namespace, "monthly"), period=PERIOD,
        holder=holder, want=Decimal(0),
    )  # fmt: skip
    return grant.committed, grant.limit


def row(namespace: str, cost: str, *, status: Status = Status.OK) -> LedgerRecord:
    return LedgerRecord(
        request_id=f"attack-{uuid.uuid4().hex}",
        created_at=datetime(2026, 11, 3, 12, tzinfo=UTC),
        period=PERIOD,
        namespace=namespace,
        pod=f"{namespace}-pod",
        route="rag-api",
        rule=None,
        arm=Arm.CANDIDATE,
        provider=PROVIDER,
        model="gpt-4o",
        data_class="internal",
        cost_usd=Decimal(cost),
        status=status,
        http_status=500 if status is Status.ERROR else 200,
    )


async def write(
    connection: AsyncConnection, holder: str, record: LedgerRecord, budget_namespace: str
) -> int:
    """Write ``record`` charged to ``budget_namespace``'s budget, as ``holder``."""
    body = encode_body(record, key(budget_namespace, "monthly").encoded)
    return await write_postgres(await driver_of(connection), holder, [record], [body])


async def takeover(connection: AsyncConnection, holder: str) -> int:
    """Close ``holder``'s leases as after its restart; how many were closed."""
    return len(await leases.takeover(await driver_of(connection), holder))


async def committed(owner_url: str, budget_namespace: str) -> Decimal:
    """The budget's committed money and its ledger rows' spend, as the owner sees them."""
    engine = create_engine(owner_url)
    try:
        async with engine.connect() as connection:
            value = await connection.scalar(
                text(
                    "SELECT coalesce(sum(committed_usd), 0) FROM aegis.budget_periods "
                    "WHERE budget_namespace = :ns AND budget_name = 'monthly'"
                ),
                {"ns": budget_namespace},
            )
    finally:
        await engine.dispose()
    return Decimal(value)


async def rows_of(owner_url: str, namespace: str) -> list[tuple[str, Decimal]]:
    """(status, cost) of the ledger rows recorded for ``namespace``."""
    engine = create_engine(owner_url)
    try:
        async with engine.connect() as connection:
            result = await connection.execute(
                text("SELECT status, cost_usd FROM aegis.ledger_entries WHERE namespace = :ns"),
                {"ns": namespace},
            )
            return [(status, Decimal(cost)) for status, cost in result]
    finally:
        await engine.dispose()


async def entries(owner_url: str) -> int:
    engine = create_engine(owner_url)
    try:
        async with engine.connect() as connection:
            return int(await connection.scalar(text("SELECT count(*) FROM aegis.ledger_entries")))
    finally:
        await engine.dispose()


#: The ledger table a hijacking function empties (in the schema its functions use).
LEDGER_TABLE = "aegis.ledger_entries"


def spend(url: str, namespace: str, budget: str, cost: str) -> None:
    """``namespace``'s sidecar spends ``cost`` USD of ``PROVIDER`` on its budget ``budget``
    (leased, then written and charged, with the namespace's own role)."""
    from tests.operator.ledger import charge
    from tests.operator.ledger import row as spend_row

    charge(url, budget, [spend_row(PROVIDER, cost, namespace=namespace)])
