"""Privacy audit: what privacy decided for each request, on its ledger row.

Revision ID: 0004
Revises: 0003
Create Date: 2026-03-15

Three nullable columns of ``ledger_entries`` (rows written before stay NULL):
``declared_class`` (the header's class or the route's default, before detection),
``pii_detectors`` (the detectors that found something, comma-separated: built-in
kinds and ``custom:<pattern>``; never a matched value) and ``privacy_action``
(``none``, ``declared_local``, ``kept_local``, ``masked`` or ``blocked``).
PostgreSQL: ``aegis.ledger_write`` is replaced by the same function reading the
three new elements of each row (a spooled row from before the upgrade has none:
they read as NULL).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from aegis.sidecar.ledger.migrations.tenant_functions_0003 import LEDGER_COLUMNS, write_function

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "aegis"
NEW_COLUMNS = (
    ("declared_class", 32),
    ("pii_detectors", 255),
    ("privacy_action", 16),
)


def _writer(with_privacy: bool) -> str:
    """``aegis.ledger_write`` of 0003, reading the new columns when ``with_privacy``."""
    source = write_function().replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1)
    if not with_privacy:
        return source
    names = ", ".join(name for name, _ in LEDGER_COLUMNS)
    last = len(LEDGER_COLUMNS)
    old_field = f"(r->>{last})::{LEDGER_COLUMNS[-1][1]} AS {LEDGER_COLUMNS[-1][0]}"
    new_fields = ",\n               ".join(
        f"(r->>{last + i + 1})::varchar({length}) AS {name}"
        for i, (name, length) in enumerate(NEW_COLUMNS)
    )
    extended = names + ", " + ", ".join(name for name, _ in NEW_COLUMNS)
    result = source.replace(old_field, f"{old_field},\n               {new_fields}", 1)
    result = result.replace(names, extended)
    if result.count(extended) != 2 or new_fields not in result:
        raise RuntimeError("aegis.ledger_write of 0003 is not shaped as expected")
    return result


def upgrade() -> None:
    postgres = op.get_context().dialect.name == "postgresql"
    schema = SCHEMA if postgres else None
    for name, length in NEW_COLUMNS:
        op.add_column("ledger_entries", sa.Column(name, sa.String(length)), schema=schema)
    if postgres:
        op.execute(_writer(with_privacy=True))


def downgrade() -> None:
    postgres = op.get_context().dialect.name == "postgresql"
    if postgres:
        op.execute(_writer(with_privacy=False))
    with op.batch_alter_table("ledger_entries", schema=SCHEMA if postgres else None) as batch:
        for name, _ in reversed(NEW_COLUMNS):
            batch.drop_column(name)
