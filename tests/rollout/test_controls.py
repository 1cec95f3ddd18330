"""Manual controls: pause holds the weight across intervals, abort returns to 0 % at
once, resume carries on, and promote skips the rest; through the spec and through
the annotation ``aegis.io/rollout-action`` (which the operator turns into the spec)."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import pytest

from aegis.operator.api.naming import ROLLOUT_ACTION_ANNOTATION
from tests.operator.harness import OperatorProcess
from tests.rollout.bed import RolloutBed, Traffic, metric_reaches, route_manifest, until

pytestmark = [pytest.mark.kube, pytest.mark.postgres, pytest.mark.slow]

ROUTE = "controls"
INTERVAL = 1.0
PLAN = {
    "steps": [10, 30, 50, 75, 100],
    "interval": f"{INTERVAL:g}s",
    "analysis": {"minRequests": 3},
}


async def test_pause_holds_abort_is_immediate_resume_and_promote(
    bed: RolloutBed, operator: OperatorProcess
) -> None:
    await bed.start_fakes()
    await bed.create_route(route_manifest(ROUTE, bed.urls, PLAN))
    await bed.wait_rollout(ROUTE, phase="Progressing", weight=10)
    urls = await bed.start_sidecars(ROUTE, 2)
    async with Traffic(urls, rate=60).running():
        await bed.wait_rollout(ROUTE, weight=30, within=20)

        # Pause by annotation: the operator sets spec.rollout.paused and removes it.
        await bed.annotate(ROUTE, ROLLOUT_ACTION_ANNOTATION, "pause")
        paused = await bed.wait_rollout(ROUTE, phase="Paused", within=10)
        held_weight, held_step = paused["weight"], paused["step"]
        assert held_weight in (30, 50)  # 50 if the next analysis won the race
        route = await bed.route(ROUTE)
        assert route["spec"]["rollout"]["paused"] is True
        assert ROLLOUT_ACTION_ANNOTATION not in (route["metadata"].get("annotations") or {})

        # Held across several intervals while the candidate keeps serving traffic.
        since, start = datetime.now().astimezone(), time.monotonic()

        async def held_long_enough() -> bool:
            state = await bed.rollout(ROUTE)
            assert (state["phase"], state["weight"], state["step"]) == (
                "Paused", held_weight, held_step,
            ), state  # fmt: skip
            candidate = (await bed.arm_counts(ROUTE, since=since))["candidate"]
            return time.monotonic() - start > 5 * INTERVAL and candidate >= 5 * 3

        await until(held_long_enough, within=30, what="five intervals of paused traffic")

        # Abort through the spec: 0 % at once, in status, ConfigMap and sidecars.
        aborted_at = time.monotonic()
        await bed.patch_rollout(ROUTE, {"abort": True})
        aborted = await bed.wait_rollout(ROUTE, phase="Aborted", weight=0, within=10)
        took = time.monotonic() - aborted_at
        assert took < 5, f"abort took {took:.1f}s"
        assert aborted["step"] == held_step
        config = await bed.configmap(ROUTE)
        assert config is not None and config["rollout"]["weight"] == 0
        await until(lambda: bed.sidecars_current(ROUTE), within=10, what="sidecars at 0 %")
        stable_since = datetime.now().astimezone()

        async def stable_traffic() -> bool:
            return sum((await bed.arm_counts(ROUTE, since=stable_since)).values()) >= 30

        await until(stable_traffic, within=20, what="traffic after the abort")
        assert (await bed.arm_counts(ROUTE, since=stable_since))["candidate"] == 0

        # Resume (annotation): back to the held step, which then advances again.
        await bed.annotate(ROUTE, ROLLOUT_ACTION_ANNOTATION, "resume")
        resumed = await bed.wait_rollout(ROUTE, phase="Progressing", within=10)
        assert resumed["weight"] >= held_weight
        spec = (await bed.route(ROUTE))["spec"]["rollout"]
        assert (spec["paused"], spec["abort"]) == (False, False)
        await until(
            lambda: _weight_above(bed, held_weight), within=20, what="advancing after resume"
        )

        # Promote now (annotation): the candidate becomes stable without the last steps.
        await bed.annotate(ROUTE, ROLLOUT_ACTION_ANNOTATION, "promote")
        promoted = await bed.wait_rollout(ROUTE, phase="Promoted", within=10)
        assert promoted["reason"] == "PromotedManually"

    async def promoted_spec() -> dict[str, Any] | None:  # written after the state
        spec: dict[str, Any] = (await bed.route(ROUTE))["spec"]
        return spec if "rollout" not in spec else None

    spec = await until(promoted_spec, within=10, what="the candidate in the spec")
    assert spec["default"] == {"provider": "canary"}
    moves = ("RolloutPaused", "RolloutAborted", "RolloutResumed", "RolloutPromoted")
    found = await bed.wait_events(ROUTE, *moves, "RolloutAction")
    reasons = [e["reason"] for e in found if e["reason"].startswith("Rollout")]
    assert reasons.index("RolloutPaused") < reasons.index("RolloutAborted")
    labels = {"route": ROUTE, "namespace": bed.namespace}
    await metric_reaches(operator.metric, "aegis_rollout_phase", 1, phase="Promoted", **labels)


async def _weight_above(bed: RolloutBed, weight: int) -> bool:
    return int((await bed.rollout(ROUTE)).get("weight", 0)) > weight


async def test_unknown_actions_are_removed_with_a_warning(bed: RolloutBed) -> None:
    await bed.start_fakes()
    await bed.create_route(route_manifest(ROUTE, bed.urls, {**PLAN, "interval": "1h"}))
    await bed.wait_rollout(ROUTE, phase="Progressing", weight=10)
    await bed.annotate(ROUTE, ROLLOUT_ACTION_ANNOTATION, "faster")

    await bed.wait_events(ROUTE, "RolloutActionIgnored")
    route = await bed.route(ROUTE)
    assert ROLLOUT_ACTION_ANNOTATION not in (route["metadata"].get("annotations") or {})
    assert (await bed.rollout(ROUTE))["phase"] == "Progressing"
