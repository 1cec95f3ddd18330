"""A healthy candidate goes 10 → 30 → 50 → 75 → 100 and is promoted, across an
operator restart; status, events, printer columns and metrics show each step."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import aiohttp
import pytest
import yaml

from tests.controlplane.kube import Kube
from tests.operator.harness import OperatorProcess
from tests.rollout.bed import RolloutBed, Traffic, chat, metric_reaches, route_manifest, until

pytestmark = [pytest.mark.kube, pytest.mark.postgres, pytest.mark.slow]

ROUTE = "healthy"
PLAN = {
    "steps": [10, 30, 50, 75, 100],
    "interval": "2s",
    "analysis": {"maxErrorRate": 0.05, "maxP95LatencyMs": 1000, "minRequests": 8},
}


async def _watch_weights(bed: RolloutBed, seen: list[int]) -> None:
    while True:
        with contextlib.suppress(Exception):
            weight = (await bed.rollout(ROUTE)).get("weight")
            if isinstance(weight, int) and (not seen or seen[-1] != weight):
                seen.append(weight)
        await asyncio.sleep(0.1)  # deliberate pacing: a watcher sampling the weight


async def test_a_healthy_candidate_is_promoted_step_by_step(
    bed: RolloutBed, operator: OperatorProcess, kube: Kube
) -> None:
    await bed.start_fakes()
    await bed.create_route(route_manifest(ROUTE, bed.urls, PLAN))
    await bed.wait_rollout(ROUTE, phase="Progressing", weight=10)
    urls = await bed.start_sidecars(ROUTE, 3)
    seen: list[int] = []
    watcher = asyncio.create_task(_watch_weights(bed, seen))
    try:
        async with Traffic(urls, rate=50).running() as traffic:
            await bed.wait_rollout(ROUTE, weight=50, within=40)
            # Events are posted from kopf's queue: let it announce the step first (a
            # process that stops may lose a queued event; the status never loses a step).
            await until(lambda: _advances(bed, 2), within=10, what="two RolloutAdvanced events")
            # The operator restarts mid-rollout: the state is in the status, nothing is lost.
            await asyncio.to_thread(operator.stop)
            # Steps the old process still advanced after the check above (a timer may
            # tick after SIGTERM): their status is written, their queued events may die
            # with the process. Read once it is gone, so nothing else can move it.
            at_exit = int((await bed.rollout(ROUTE))["step"])
            await asyncio.to_thread(operator.start)
            state = await bed.wait_rollout(ROUTE, phase="Promoted", within=60)
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher

    assert seen == [10, 30, 50, 75, 100], seen
    assert traffic.statuses[200] == sum(traffic.statuses.values()), traffic.statuses
    assert (state["weight"], state["step"], state["reason"]) == (100, 4, "Promoted")
    assert "step 4 (100 %) passed" in state["message"]
    assert state["candidate"]["requests"] >= 8 and state["candidate"]["errors"] == 0
    assert state["candidate"]["errorRate"] == "0.0%"

    # The candidate is the stable policy now (the state is written first, then the
    # spec): the rollout is gone from spec and config.
    async def promoted_config() -> dict[str, Any] | None:
        config = await bed.configmap(ROUTE)
        return config if config is not None and "rollout" not in config else None

    config = await until(promoted_config, within=10, what="the promoted config")
    assert config["default"] == {"provider": "canary"}
    route = await bed.route(ROUTE)
    assert "rollout" not in route["spec"]
    assert route["spec"]["default"] == {"provider": "canary"}
    await until(lambda: bed.sidecars_current(ROUTE), within=15, what="promoted config in sidecars")
    async with aiohttp.ClientSession() as session:
        reply = await chat(session, urls[0], "user-after", 0)
    assert (reply.status, reply.arm) == (200, "stable")

    events = await bed.wait_events(ROUTE, "RolloutStarted", "RolloutPromoted")
    moves = [(e["reason"], e["message"]) for e in events if e["reason"].startswith("Rollout")]
    reasons = [reason for reason, _ in moves]
    assert reasons[0] == "RolloutStarted" and reasons[-1] == "RolloutPromoted", moves
    advanced = [message for reason, message in moves if reason == "RolloutAdvanced"]
    every = ["step 1 at 30 %", "step 2 at 50 %", "step 3 at 75 %", "step 4 at 100 %"]
    announced = [m.rsplit("now ", 1)[1] for m in advanced]
    # In order and once each; only the steps the stopping process took may lack theirs.
    may_be_lost = {every[n - 1] for n in range(3, at_exit + 1)}
    assert announced == [step for step in every if step in announced], moves
    assert set(every) - may_be_lost <= set(announced), (moves, at_exit)

    columns = await asyncio.to_thread(kube.kubectl, "get", "llmroute", ROUTE, "-n", bed.namespace)
    header, row = columns.stdout.splitlines()
    assert header.split()[3:5] == ["ROLLOUT", "WEIGHT"]
    assert row.split()[3:5] == ["Promoted", "100"]
    labels = {"route": ROUTE, "namespace": bed.namespace}
    await metric_reaches(operator.metric, "aegis_rollout_phase", 1, phase="Promoted", **labels)
    assert operator.metric("aegis_rollout_weight", **labels) == 100
    assert operator.metric("aegis_rollout_phase", phase="Progressing", **labels) == 0
    assert yaml.safe_dump(route["spec"])  # still a valid, readable spec


async def _advances(bed: RolloutBed, count: int) -> bool:
    advanced = [e for e in await bed.events(ROUTE) if e["reason"] == "RolloutAdvanced"]
    return len(advanced) >= count
