"""A candidate that crosses a line is rolled back from its first step, the reason
naming the metric: 10 % errors → ``ErrorRate``, a slow provider → ``Latency``, a
dear one → ``Cost``. The sidecars go back to stable by hot reload.

The first analysis may find fewer than ``minRequests`` candidate rows and wait one
interval: the step's clock starts when the operator takes the change, the
candidate's rows only once the sidecars have reloaded and the slow provider has
answered, and on a loaded machine that chain can outlast the 3 s interval. So
the test pins the verdict (one rollback, never an advance), not the interval it
came at; the waiting rule itself is unit-tested with the pure analysis."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from aegis.operator.api.naming import ROLLOUT_ACTION_ANNOTATION
from tests.operator.harness import OperatorProcess
from tests.rollout.bed import RolloutBed, Traffic, metric_reaches, route_manifest, until

pytestmark = [pytest.mark.kube, pytest.mark.postgres, pytest.mark.slow]

INTERVAL = 3.0
#: (route, canary knobs, canary pricing, analysis, reason, text in the message)
CASES: list[tuple[str, dict[str, Any], dict[str, Any] | None, dict[str, Any], str, str]] = [
    # Seed 9: every prefix of >= 5 draws of the fake's dice fails 10.3 % or more, so
    # the measured rate is over 5 % whatever number of requests the analysis sees (the
    # candidate gets no traffic before the step, so the step sees a prefix).
    ("errors", {"error_rate": 0.1, "seed": 9}, None, {}, "ErrorRate",
     "is over maxErrorRate 5.0%"),
    ("slow", {"latency_ms": 400}, None, {"maxP95LatencyMs": 300}, "Latency",
     "is over maxP95LatencyMs 300 ms"),
    ("dear", {}, {"gpt-4o-mini": {"inputPer1M": 1000, "outputPer1M": 1000}},
     {"maxCostUSDPerDay": 50}, "Cost", "per day, over maxCostUSDPerDay $50"),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=[c[4] for c in CASES])
async def test_a_candidate_over_a_line_is_rolled_back_from_its_first_step(
    bed: RolloutBed,
    operator: OperatorProcess,
    case: tuple[str, dict[str, Any], dict[str, Any] | None, dict[str, Any], str, str],
) -> None:
    route, knobs, pricing, analysis, reason, text = case
    await bed.start_fakes(knobs)
    plan = {
        "steps": [10, 30, 50, 75, 100],
        "interval": f"{INTERVAL:g}s",
        "analysis": {"maxErrorRate": 0.05, "minRequests": 5, **analysis},
        "abort": True,  # 0 % until the sidecars and their traffic run
    }
    await bed.create_route(route_manifest(route, bed.urls, plan, canary_pricing=pricing))
    await bed.wait_rollout(route, phase="Aborted", weight=0)
    urls = await bed.start_sidecars(route, 2)
    async with Traffic(urls, rate=60, users=100_000).running():
        await bed.patch_rollout(route, {"abort": False})  # the step starts, fresh
        state = await bed.wait_rollout(route, phase="RolledBack", within=30)
        assert (state["weight"], state["step"], state["reason"]) == (0, 0, reason)
        assert text in state["message"] and state["message"].startswith("rolled back from step 0")
        assert state["candidate"]["requests"] >= 5
        # one verdict, and no step passed before it
        labels = {"route": route, "namespace": bed.namespace}
        decisions = "aegis_rollout_decisions_total"
        assert operator.metric(decisions, outcome="rollback", **labels) == 1
        assert operator.metric(decisions, outcome="advance", **labels) is None
        # the controller writes the state, then renders it
        await until(lambda: _config_weight(bed, route, 0), within=10, what="0 % rendered")
        await until(lambda: bed.sidecars_current(route), within=15, what="sidecars at 0 %")
        back = datetime.now().astimezone()
        await until(
            lambda: _rows_after(bed, route, back, 30), within=20, what="traffic after rollback"
        )
        assert (await bed.arm_counts(route, since=back))["candidate"] == 0

    await metric_reaches(operator.metric, "aegis_rollout_phase", 1, phase="RolledBack", **labels)
    assert operator.metric("aegis_rollout_weight", **labels) == 0
    found = await bed.wait_events(route, "RolloutRolledBack")
    events = [e for e in found if e["reason"] == "RolloutRolledBack"]
    assert len(events) == 1 and events[0]["type"] == "Warning"
    assert events[0]["message"].startswith(f"{reason}: rolled back from step 0 (10 %)")

    # The same candidate may try again (after its provider is fixed): action restart.
    await bed.annotate(route, ROLLOUT_ACTION_ANNOTATION, "restart")
    again = await bed.wait_rollout(route, reason="Restarted", within=10)
    assert (again["phase"], again["step"], again["weight"]) == ("Progressing", 0, 10)
    await bed.wait_events(route, "RolloutRestarted", "RolloutAction")


async def _rows_after(bed: RolloutBed, route: str, since: datetime, count: int) -> bool:
    return sum((await bed.arm_counts(route, since=since)).values()) >= count


async def _config_weight(bed: RolloutBed, route: str, weight: int) -> bool:
    config = await bed.configmap(route)
    return config is not None and config["rollout"]["weight"] == weight
