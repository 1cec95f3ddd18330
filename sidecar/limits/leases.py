"""Rate-limit leases: the :class:`~.limiter.SlotSource` for many sidecars sharing a
limit through the PostgreSQL ledger.

Per limit, a sidecar holds a lease of slots (``aegis.rate_lease``, one statement,
off the request path). A background task here sets the lease to what the sidecar
wants (:meth:`~.pool.SlotPool.want`: the last window's demand with headroom, never
below the slots busy or reserved, at most a fair share while others are short):

- it asks for more when less than ``refill_at`` of what it wants is free, or at
  once when a request is short (the request waits up to ``statement_timeout`` for
  the answer, only while the limit had room at the last answer);
- it gives back free slots (never busy ones: a slot used less than a window ago
  still counts) when it holds more than it wants for ``idle_return`` seconds;
- it renews every ``ttl/3`` seconds; when no statement succeeded for 3/4 of the TTL
  since the last successful one was sent, it stops admitting (its lease may be
  reclaimed a TTL plus a window after its last renewal, once every slot it used has
  aged out);
- statements carry an increasing sequence number, so a late one never undoes a
  newer one; the first statement of a process is *fresh*: it never lowers the lease,
  and what the lease already held (a previous life's slots, perhaps used in the last
  window) counts as busy for a window.

Guarantee and bound: docs/ledger.md ("Rate limits").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from ..ledger.database import Connection, Database
from .pool import PoolKey, SlotPool

log = logging.getLogger(__name__)

# Typed parameters: asyncpg encodes them as the function declares.
_LEASE = (
    "SELECT lease_amount, carried, committed, limit_value, active, short, applied FROM "
    "aegis.rate_lease($1::text, $2::text, $3::text, $4::text, $5::text, $6::bigint, "
    "$7::bigint, $8::bigint, $9::bigint, $10::integer, $11::boolean)"
)


@dataclass(frozen=True, slots=True)
class LeaseAnswer:
    amount: int  # slots the holder's lease has now
    carried: int  # a fresh statement: what the lease held before it
    committed: int  # every holder's slots together
    limit: int
    active: int  # holders holding or wanting slots
    short: int  # other holders that want more than they hold
    applied: bool


async def rate_lease(
    connection: Connection,
    key: PoolKey,
    holder: str,
    *,
    seq: int,
    want: int,
    need: int,
    limit: int,
    ttl: int,
    fresh: bool,
) -> LeaseAnswer:
    """One ``aegis.rate_lease`` statement (see :mod:`..ledger.migrations.rate_functions`)."""
    row = await connection.fetchone(
        _LEASE,
        key.kind,
        key.namespace,
        key.name,
        key.unit.value,
        holder,
        seq,
        want,
        need,
        limit,
        ttl,
        fresh,
    )
    amount, carried, committed, limit, active, short, applied = row
    return LeaseAnswer(
        int(amount),
        int(carried),
        int(committed),
        int(limit),
        int(active),
        int(short),
        bool(applied),
    )


@dataclass(frozen=True, slots=True)
class RateLeaseSettings:
    ttl_seconds: int = 60
    tick: float = 0.1
    refill_at: float = 0.5
    headroom: float = 1.25
    idle_return: float = 10.0
    statement_timeout: float = 2.0
    retry_interval: float = 0.5


class _Lease:
    __slots__ = ("fair", "fresh", "need", "ok_sent", "sent", "surplus_since", "waiter")

    def __init__(self) -> None:
        self.fresh = True
        self.need = 0
        self.fair: int | None = None
        self.ok_sent: float | None = None  # when the last applied statement was sent
        self.sent = -math.inf
        self.surplus_since: float | None = None
        self.waiter: asyncio.Future[None] | None = None


class LeaseSlots:
    """Leases of every limit in force for one holder (``namespace/pod``)."""

    def __init__(
        self,
        database: Database,
        holder: str,
        *,
        settings: RateLeaseSettings | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.database = database  # autocommit: each statement is its own transaction
        self.holder = holder
        self.settings = settings or RateLeaseSettings()
        self.clock = clock
        self.pools: dict[PoolKey, SlotPool] = {}
        self._leases: dict[PoolKey, _Lease] = {}
        self._closing: list[SlotPool] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._seq = 0
        self.statements = 0
        self.failures = 0
        self.denied: set[PoolKey] = set()

    # -- SlotSource ------------------------------------------------------------------

    def opened(self, pool: SlotPool) -> None:
        if pool.key not in self.pools:
            self.pools[pool.key] = pool
            self._leases[pool.key] = _Lease()
        self._wake.set()

    def closed(self, pool: SlotPool) -> None:
        self.pools.pop(pool.key, None)
        self._closing.append(pool)
        self._wake.set()

    def short(self, pool: SlotPool, need: int) -> Awaitable[None] | None:
        lease = self._leases.get(pool.key)
        if lease is None or self._task is None or pool.key in self.denied:
            return None
        now = self.clock()
        missing = need - max(pool.free(now), 0)
        if pool.shared_room is not None and pool.shared_room < missing:
            return None  # nobody holds enough unused slots: waiting cannot help
        lease.need = max(lease.need, missing)
        if lease.waiter is None or lease.waiter.done():
            lease.waiter = asyncio.get_running_loop().create_future()
        self._wake.set()
        waiter = asyncio.shield(lease.waiter)
        return asyncio.wait_for(waiter, self.settings.statement_timeout + 0.5)

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="aegis-rate-leases")

    async def aclose(self) -> None:
        """Give back every free slot; busy ones expire with a short TTL (a window plus
        that TTL after now, every slot used here has aged out and is reclaimed)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        for pool in [*self.pools.values(), *self._closing]:
            with contextlib.suppress(Exception):
                await self._send(pool, self._leases.get(pool.key) or _Lease(), final=True)

    # -- the background task ---------------------------------------------------------

    async def _run(self) -> None:
        settings = self.settings
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(settings.tick):
                    await self._wake.wait()
            self._wake.clear()
            while self._closing:
                pool = self._closing.pop()
                with contextlib.suppress(Exception):
                    await self._send(pool, self._leases.pop(pool.key, _Lease()), final=True)
            for key, pool in list(self.pools.items()):
                lease = self._leases[key]
                now = self.clock()
                self._guard(pool, lease, now)
                if self._due(pool, lease, now):
                    try:
                        await self._send(pool, lease)
                    except Exception as error:  # a failed statement is retried
                        self.failures += 1
                        log.warning("rate lease %s failed: %s", key, error)
                        self._release_waiter(lease)

    def _guard(self, pool: SlotPool, lease: _Lease, now: float) -> None:
        """No applied statement for 3/4 of the TTL: admit nothing more."""
        stale = lease.ok_sent is None or now - lease.ok_sent > 0.75 * self.settings.ttl_seconds
        if stale and not lease.fresh:
            pool.held = min(pool.held, max(pool.committed(now), 0))

    def _due(self, pool: SlotPool, lease: _Lease, now: float) -> bool:
        s = self.settings
        if now - lease.sent < (s.retry_interval if lease.ok_sent is None else 0.0):
            return False
        if lease.fresh or lease.need > 0:
            return True
        if pool.key in self.denied:
            return now - lease.sent > s.idle_return
        if lease.ok_sent is None or now - lease.ok_sent > s.ttl_seconds / 3:
            return True
        want = pool.want(0, now, headroom=s.headroom, fair=lease.fair)
        if want > pool.held and pool.free(now) < s.refill_at * want:
            return pool.shared_room is None or pool.shared_room > 0 or now - lease.sent > 1.0
        if want < pool.held:
            lease.surplus_since = lease.surplus_since or now
            return now - lease.surplus_since > s.idle_return
        lease.surplus_since = None
        return False

    def _next_seq(self) -> int:
        self._seq = max(self._seq + 1, time.time_ns() // 1000)
        return self._seq

    async def _send(self, pool: SlotPool, lease: _Lease, *, final: bool = False) -> None:
        s = self.settings
        now = self.clock()
        if final:
            want, need, ttl = max(pool.committed(now), 0), 0, 1
        else:
            need = lease.need
            want = pool.want(need, now, headroom=s.headroom, fair=lease.fair)
            ttl = s.ttl_seconds
        if want < pool.held and not lease.fresh:
            pool.held = want  # stop using them before giving them back
        lease.sent = now
        seq = self._next_seq()
        self.statements += 1
        try:
            async with asyncio.timeout(s.statement_timeout), self.database.connect() as connection:
                answer = await rate_lease(
                    connection,
                    pool.key,
                    self.holder,
                    seq=seq,
                    want=want,
                    need=need,
                    limit=pool.limit,
                    ttl=ttl,
                    fresh=lease.fresh,
                )
        except Exception as error:
            if "not granted" in str(error):
                self.denied.add(pool.key)
                pool.held = min(pool.held, max(pool.committed(now), 0))
                lease.need = 0
                self._release_waiter(lease)
                return
            raise
        self.denied.discard(pool.key)
        if answer.applied:
            if lease.fresh and answer.carried > 0:
                # a previous life's slots may have been used in the last window
                pool.busy.add(now + pool.window, answer.carried)
            lease.fresh = False
            lease.ok_sent = now
            pool.held = answer.amount
        pool.limit = answer.limit if pool.key.kind == "Budget" else pool.limit
        pool.shared_room = max(answer.limit - answer.committed, 0)
        lease.fair = math.ceil(answer.limit / max(answer.active, 1)) if answer.short else None
        lease.need = 0
        self._release_waiter(lease)

    @staticmethod
    def _release_waiter(lease: _Lease) -> None:
        if lease.waiter is not None and not lease.waiter.done():
            lease.waiter.set_result(None)
