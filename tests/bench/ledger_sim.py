"""The simulated sidecars of ``ledger_scale.py``: each one's spooled, batched ledger
store and lease statements, run in a forked worker process (one event loop per
worker), and the pre-encoded writers that measure what the database sustains."""

from __future__ import annotations

import asyncio
import resource
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from aegis.sidecar.exchange.record import new_request_id
from aegis.sidecar.ledger import leases
from aegis.sidecar.ledger.database import PostgresConnection, open_database
from aegis.sidecar.ledger.records import LedgerRecord
from aegis.sidecar.ledger.spool import Spool, encode_body
from aegis.sidecar.ledger.store import LedgerStore
from aegis.sidecar.ledger.writes import write_postgres
from tests.sidecar.tenancy import key

PERIOD = "2026-11"
CHARGE = "Namespace/ns/dash"
COST = Decimal("0.000123")
BACKLOG = 1024  # rows a simulated sidecar may have appended and not yet committed
SLICE = Decimal("0.01")


@dataclass(frozen=True)
class Job:
    url: str
    sidecars: list[int]
    rows_each: float  # rows/s offered per simulated sidecar
    lease_interval: float  # 0: no lease statements
    start_at: float
    warmup: float
    window: float
    spool: str
    batches: bool = False  # pre-encoded batches as fast as they are taken, no sidecars


def make_row(index: int, now: datetime) -> LedgerRecord:
    return LedgerRecord(
        request_id=new_request_id(),  # as a request gets it: time-ordered
        created_at=now,
        period=PERIOD,
        namespace="ns",
        pod=f"sim-{index:04d}",
        route="bench",
        rule="batch",
        arm="stable",
        provider="dashscope",
        model="qwen-plus",
        data_class="internal",
        tokens_in=100,
        tokens_out=20,
        cost_usd=COST,
        latency_ms=120,
    )


class Sim:
    """One simulated sidecar's ledger side."""

    def __init__(self, job: Job, index: int) -> None:
        self.index = index
        self.holder = f"ns/sim-{index:04d}"
        self.store = LedgerStore(
            job.url,
            spool=Spool(Path(job.spool) / f"sim-{index:04d}"),
            holder=self.holder,
            charge_to=lambda _record: CHARGE,
        )
        self.latencies: list[float] = []
        self.lease_ops = 0
        self.lease_errors = 0
        self.appended = 0

    async def lease(self, want: Decimal, give_back: Decimal, *, timed: bool) -> None:
        started = time.perf_counter()
        async with self.store.database.connect() as connection:
            if give_back:
                await leases.give_back(
                    connection,
                    budget=key("dash"),
                    period=PERIOD,
                    holder=self.holder,
                    amount=give_back,
                    close=False,
                )
            else:
                await leases.take(
                    connection, budget=key("dash"), period=PERIOD, holder=self.holder, want=want
                )
        if timed:
            self.latencies.append(time.perf_counter() - started)
            self.lease_ops += 1


async def produce(sim: Sim, rate: float, until: float) -> None:
    """Append rows at ``rate``/s (every 20 ms what is owed), as requests would, but
    never more than ``BACKLOG`` rows ahead of the database (closed loop: the figure is
    what the ledger sustains, not how long a queue grows)."""
    owed, last = 0.0, time.time()
    while last < until:
        await asyncio.sleep(0.02)  # the offered load's pacing
        now = time.time()
        # What a starved loop could not offer in time is not offered later.
        owed = min(owed + rate * (now - last), rate * 0.1)
        last = now
        instant = datetime.now(UTC)
        for _ in range(min(int(owed), max(BACKLOG - sim.store.pending, 0))):
            sim.appended += 1
            sim.store.append(make_row(sim.index, instant))
        owed -= int(owed)


async def churn(sim: Sim, job: Job, until: float, measure_from: float) -> None:
    """Take a slice, give it back, again: the lease source's statements."""
    turn = 0
    while time.time() < until:
        await asyncio.sleep(job.lease_interval)  # the offered lease rate's pacing
        turn += 1
        timed = time.time() >= measure_from
        try:
            await sim.lease(SLICE, SLICE if turn % 2 == 0 else Decimal(0), timed=timed)
        except Exception:  # e.g. too many connections without a pooler: counted
            sim.lease_errors += 1


Batch = tuple[list[LedgerRecord], list[bytes]]


def encoded_batches(job: Job, index: int) -> list[Batch]:
    """256-row batches for one writer, encoded as a sidecar spools them."""
    now = datetime.now(UTC)
    needed = int(job.rows_each * (job.warmup + job.window) * 1.5)
    rows = [make_row(index, now) for _ in range(needed)]
    return [
        (rows[i : i + 256], [encode_body(r, CHARGE) for r in rows[i : i + 256]])
        for i in range(0, len(rows), 256)
    ]


async def firehose(job: Job, index: int, batches: list[Batch]) -> tuple[int, int]:
    """One writer: pre-encoded batches through ``write_postgres`` until the window
    closes; (rows committed in the window, batches left unsent)."""
    holder = f"ns/sim-{index:04d}"
    database = open_database(job.url)
    measure_from = job.start_at + job.warmup
    until = measure_from + job.window
    written = 0
    try:
        async with database.connect() as connection:
            assert isinstance(connection, PostgresConnection)
            await leases.take(
                connection, budget=key("dash"), period=PERIOD, holder=holder, want=Decimal(1000)
            )
            await asyncio.sleep(max(job.start_at - time.time(), 0))  # deliberate pacing: start
            while batches and time.time() < until:
                batch, bodies = batches.pop(0)
                inserted = await write_postgres(connection, holder, batch, bodies)
                if time.time() >= measure_from:
                    written += inserted
    finally:
        await database.aclose()
    return written, len(batches)


async def work(job: Job) -> dict[str, Any]:
    if job.batches:
        built = {i: encoded_batches(job, i) for i in job.sidecars}
        writers = asyncio.gather(*(firehose(job, i, built[i]) for i in job.sidecars))
        await asyncio.sleep(max(job.start_at + job.warmup - time.time(), 0))  # warm-up
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        await asyncio.sleep(max(job.start_at + job.warmup + job.window - time.time(), 0))
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        done = await writers
        if any(left == 0 for _, left in done):
            print("a writer ran out of pre-encoded batches: raise --rows", file=sys.stderr)
        written = sum(w for w, _ in done)
        return {
            "written": written,
            "appended": written,
            "errors": 0,
            "pending": 0,
            "cpu": (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime),
            "latencies": [],
            "lease_ops": 0,
        }
    sims = [Sim(job, i) for i in job.sidecars]
    await asyncio.gather(*(s.store.start() for s in sims))
    # A large first lease, so that every row's charge settles within it.
    for sim in sims:
        try:
            await sim.lease(Decimal(1000), Decimal(0), timed=False)
        except Exception:
            sim.lease_errors += 1
    await asyncio.sleep(max(job.start_at - time.time(), 0))  # deliberate pacing: common start
    measure_from = job.start_at + job.warmup
    until = measure_from + job.window
    tasks = [asyncio.create_task(produce(s, job.rows_each, until)) for s in sims]
    if job.lease_interval > 0:
        tasks += [asyncio.create_task(churn(s, job, until, measure_from)) for s in sims]
    await asyncio.sleep(max(measure_from - time.time(), 0))  # deliberate pacing: warm-up
    errors0 = sum(s.store.write_errors + s.lease_errors for s in sims)
    written0 = sum(s.store.rows_written for s in sims)
    appended0 = sum(s.appended for s in sims)
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    await asyncio.sleep(max(until - time.time(), 0))  # deliberate pacing: window
    written = sum(s.store.rows_written for s in sims) - written0
    appended = sum(s.appended for s in sims) - appended0
    errors = sum(s.store.write_errors + s.lease_errors for s in sims) - errors0
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    pending = sum(s.store.pending for s in sims)
    await asyncio.gather(*tasks)
    await asyncio.gather(*(s.store.aclose() for s in sims))
    return {
        "written": written,
        "appended": appended,
        "errors": errors,
        "pending": pending,
        "cpu": (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime),
        "latencies": [x for s in sims for x in s.latencies],
        "lease_ops": sum(s.lease_ops for s in sims),
    }


def run_worker(job: Job, results: Any) -> None:
    results.put(asyncio.run(work(job)))
