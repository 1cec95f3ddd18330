"""A budget-lease holder in its own process, for tests that SIGKILL it.

``python -m tests.sidecar.lease_holder URL SPOOL HOLDER LIMIT TTL SPEND SETTLE``
opens the ledger store, the budget book and its lease source exactly as a sidecar
does (:func:`aegis.sidecar.runtime.wiring.open_budgets`), reserves ``SPEND`` of the
``dash`` budget, settles ``SETTLE``, writes the ledger row, prints ``ready`` and then
keeps renewing its lease until it is killed. Commands on stdin, one a line, each
answered with one line: ``spend AMOUNT ACTUAL ID`` -> ``admitted`` or ``refused
REASON``; ``view`` -> ``HELD SETTLED`` of its local account.
"""

from __future__ import annotations

import asyncio
import sys
from decimal import Decimal
from pathlib import Path

from aegis.sidecar.budgets import BudgetBook, LeaseSettings, Reservation
from aegis.sidecar.ledger.spool import Spool
from aegis.sidecar.ledger.store import LedgerStore
from aegis.sidecar.runtime.wiring import open_budgets
from tests.sidecar.ledger_helpers import budget, record


async def hold(argv: list[str]) -> None:
    url, spool, holder, limit, ttl, spend, settle = argv
    settings = LeaseSettings(tick=0.01, ttl_seconds=int(ttl), min_slice_share=Decimal("0.5"))
    store = LedgerStore(url, spool=Spool(Path(spool)), holder=holder)
    await store.start()
    budgets = [budget("dash", "dashscope", limit)]
    book, source = await open_budgets(budgets, store, settings=settings)
    assert source is not None
    assert await pay(book, store, Decimal(spend), Decimal(settle), f"{holder}-0") == "admitted"
    print("ready", flush=True)
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        command, *args = line.decode().split()
        if command == "spend":
            answer = await pay(book, store, Decimal(args[0]), Decimal(args[1]), args[2])
        else:
            key = f"Namespace/{holder.partition('/')[0]}/dash"
            view = book.account_view(key, book.period("dashscope"))
            answer = f"{view[0]} {view[1]}" if view else "none"
        print(answer, flush=True)
    await asyncio.Event().wait()  # stdin closed: renew until SIGKILLed


async def pay(
    book: BudgetBook, store: LedgerStore, amount: Decimal, actual: Decimal, rid: str
) -> str:
    outcome = await book.acquire("dashscope", amount)
    if not isinstance(outcome, Reservation):
        return f"refused {outcome.reason}"
    charged = book.settle(outcome, actual)
    store.append(record(0, request_id=rid, cost_usd=charged, period=outcome.period))
    await store.flush()
    return "admitted"


if __name__ == "__main__":
    asyncio.run(hold(sys.argv[1:8]))
