"""Three sidecar processes, one rollout weight: the global candidate share in the
ledger matches the weight, and a user key lands on the same arm whichever sidecar
serves it (the assignment is a hash of route, candidate and key, not per process)."""

from __future__ import annotations

import asyncio
from collections import defaultdict

import aiohttp
import pytest

from tests.rollout.bed import Reply, RolloutBed, chat, route_manifest, until

pytestmark = [pytest.mark.kube, pytest.mark.postgres, pytest.mark.slow]

ROUTE = "share"
USERS = 5_000
PER_USER = 2  # 10,000 requests, each user's through two different sidecars


async def test_candidate_share_across_three_sidecars_matches_the_weight(bed: RolloutBed) -> None:
    await bed.start_fakes()
    plan = {"steps": [30, 100], "interval": "1h"}  # holds at 30 % for the whole test
    await bed.create_route(route_manifest(ROUTE, bed.urls, plan))
    await bed.wait_rollout(ROUTE, phase="Progressing", weight=30)
    urls = await bed.start_sidecars(ROUTE, 3)

    jobs = [(f"user-{u}", (u + k) % len(urls)) for k in range(PER_USER) for u in range(USERS)]
    replies: list[Reply] = []
    queue: asyncio.Queue[tuple[str, int]] = asyncio.Queue()
    for job in jobs:
        queue.put_nowait(job)

    async def worker(session: aiohttp.ClientSession) -> None:
        while not queue.empty():
            user, sidecar = queue.get_nowait()
            replies.append(await chat(session, urls[sidecar], user, sidecar))

    connector = aiohttp.TCPConnector(limit=64)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(worker(session) for _ in range(24)))

    assert len(replies) == USERS * PER_USER
    assert all(r.status == 200 for r in replies), {r.status for r in replies}
    arms_by_user: dict[str, set[str | None]] = defaultdict(set)
    sidecars_by_user: dict[str, set[int]] = defaultdict(set)
    for reply in replies:
        arms_by_user[reply.user].add(reply.arm)
        sidecars_by_user[reply.user].add(reply.sidecar)
    assert all(len(s) == PER_USER for s in sidecars_by_user.values())
    assert all(len(arms) == 1 for arms in arms_by_user.values()), "a user changed arms"

    async def all_rows() -> dict[str, int] | None:
        counts = await bed.arm_counts(ROUTE)
        return dict(counts) if sum(counts.values()) == USERS * PER_USER else None

    counts = await until(all_rows, within=30, what="every request in the ledger")
    share = 100 * counts["candidate"] / (USERS * PER_USER)
    assert abs(share - 30) <= 2, counts
    pods = await bed.arm_counts(ROUTE, by="pod")
    assert sorted(pods) == [f"{ROUTE}-0", f"{ROUTE}-1", f"{ROUTE}-2"]
    assert all(n > 3000 for n in pods.values()), pods  # each served about a third
