"""The ledger's months ahead, kept by the operator (PostgreSQL, migration 0007).

Every ``interval`` seconds (and once at start) the operator's control role calls
``aegis.ensure_partitions``: partitions for the current month and the next
:data:`~aegis.sidecar.ledger.partitions.MONTHS_AHEAD`, and for rows that waited in the
default partition. The migration job does the same at every run; either one is
enough, both make a missed month impossible while one of them runs. A failure is
logged and tried again at the next tick (inserts never fail meanwhile: the default
partition takes the rows).
"""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy.ext.asyncio import AsyncEngine

from aegis.sidecar.ledger.partitions import MONTHS_AHEAD, ensure_partitions

log = logging.getLogger(__name__)

#: Seconds between calls: a month ahead always exists, so a few a day are plenty.
INTERVAL = 6 * 3600.0


async def keep_partitions(
    control: AsyncEngine, interval: float = INTERVAL, months_ahead: int = MONTHS_AHEAD
) -> None:
    """Run until cancelled."""
    while True:
        try:
            created = await ensure_partitions(control, months_ahead)
        except Exception:
            log.warning("ledger partitions ahead: not ensured (retried later)", exc_info=True)
        else:
            if created:
                log.info("ledger partitions ahead: %d created", created)
        await asyncio.sleep(interval)
