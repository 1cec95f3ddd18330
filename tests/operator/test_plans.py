"""The reconcilers' decisions as pure functions: what a reconcile, a budget sync, a
rollout pass and an action annotation would write, without a cluster."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from aegis.operator.api.naming import ROLLOUT_ACTION_ANNOTATION, configmap_name
from aegis.operator.controllers.budget_plan import (
    LedgerProblem,
    Spend,
    plan_budget,
    prepare_budget,
)
from aegis.operator.controllers.rollout import pending
from aegis.operator.controllers.rollout_actions import plan_action
from aegis.operator.controllers.route_plan import SecretKeys, plan_route, prepare
from aegis.sidecar.contract.money import ZERO

EXAMPLES = Path(__file__).resolve().parents[2] / "crds" / "examples"
NOW = datetime(2026, 11, 3, 12, 0, tzinfo=UTC)
ALL_KEYS = {
    "dashscope": SecretKeys(keys=frozenset({"apiKey"})),
    "openai": SecretKeys(keys=frozenset({"apiKey"})),
}


def route(spec: dict[str, Any] | None = None) -> dict[str, Any]:
    doc = next(d for d in yaml.safe_load_all((EXAMPLES / "rag-api-route.yaml").read_text()) if d)
    return {
        "apiVersion": "aegis.io/v1alpha1",
        "kind": "LLMRoute",
        "metadata": {
            "name": "rag-api", "namespace": "team", "uid": "u-1", "generation": 1,
            "resourceVersion": "7",
        },
        "spec": copy.deepcopy(spec or doc["spec"]),
    }  # fmt: skip


def applied(obj: dict[str, Any], patch: dict[str, Any] | None) -> dict[str, Any]:
    """The object after a status merge patch, as the API would return it."""
    if patch is None:
        return obj
    status = {k: v for k, v in patch["status"].items() if v is not None}
    return {**obj, "status": {**(obj.get("status") or {}), **status}}


def test_a_second_reconcile_plans_nothing() -> None:
    first = route()
    prepared = prepare(first, [], NOW)
    plan = plan_route(first, prepared, None, ALL_KEYS, NOW)
    assert plan.configmap is not None and plan.configmap.create
    assert plan.configmap.event.reason == "ConfigRendered"
    assert plan.status is not None and plan.status["metadata"] == {"resourceVersion": "7"}
    assert plan.outcome == "changed" and plan.ready
    configmap = copy.deepcopy(plan.configmap.body)
    again = applied(first, plan.status)
    second = plan_route(again, prepare(again, [], NOW), configmap, ALL_KEYS, NOW)
    assert (second.configmap, second.status, second.events) == (None, None, ())
    assert second.outcome == "unchanged"


def test_a_configmap_of_someone_else_is_left_alone() -> None:
    obj = route()
    foreign = {"metadata": {"name": configmap_name("rag-api"), "resourceVersion": "1"}}
    plan = plan_route(obj, prepare(obj, [], NOW), foreign, ALL_KEYS, NOW)
    assert plan.configmap is None and plan.outcome == "invalid"
    assert plan.status is not None
    ready = plan.status["status"]["conditions"][0]
    assert (ready["status"], ready["reason"]) == ("False", "ConfigMapConflict")
    assert [e.reason for e in plan.events] == ["ConfigMapConflict"]


def test_secret_problems_are_named_and_the_config_still_rendered() -> None:
    obj = route()
    secrets = {"dashscope": SecretKeys(keys=frozenset({"other"})), "openai": SecretKeys()}
    plan = plan_route(obj, prepare(obj, [], NOW), None, secrets, NOW)
    assert plan.configmap is not None and not plan.ready
    ready = plan.status["status"]["conditions"][0] if plan.status else {}
    assert ready["reason"] == "KeyNotFound"
    assert "has no key 'apiKey'" in ready["message"] and "does not exist" in ready["message"]
    denied = {**secrets, "openai": SecretKeys(denied="403 Forbidden: no")}
    message = plan_route(obj, prepare(obj, [], NOW), None, denied, NOW).events[0].message
    assert "cannot read Secret 'openai'" in message


def test_unchecked_secrets_tell_nothing_about_them() -> None:
    """Without --check-secrets the operator reads no Secret: Ready says nothing of
    which Secrets or keys exist (the kubelet reports a missing one on the pod)."""
    obj = route()
    plan = plan_route(obj, prepare(obj, [], NOW), None, None, NOW)
    assert plan.configmap is not None and plan.ready
    ready = plan.status["status"]["conditions"][0] if plan.status else {}
    assert ready["reason"] == "Reconciled" and "Secret" not in ready["message"]


def test_an_invalid_spec_writes_only_the_status() -> None:
    obj = route({"providers": [], "default": {"provider": "nowhere"}})
    prepared = prepare(obj, [], NOW)
    assert prepared.rendered is None and prepared.secrets == ()
    plan = plan_route(obj, prepared, None, {}, NOW)
    assert plan.configmap is None and plan.outcome == "invalid" and not plan.rollout_known
    conditions = {c["type"]: c for c in plan.status["status"]["conditions"]} if plan.status else {}
    assert conditions["Invalid"]["status"] == "True"


def budget(status: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "monthly", "namespace": "team", "generation": 1, "resourceVersion": "3",
        },
        "spec": {"provider": "openai", "limitUSD": 100, "alertThresholds": [50, 90, 100]},
        "status": status or {},
    }  # fmt: skip


def test_a_threshold_is_announced_once_per_period() -> None:
    obj = budget()
    prepared = prepare_budget(obj, None, NOW)
    spend = Spend(spent=ZERO + 60, reserved=ZERO)
    plan = plan_budget(
        obj, prepared, spend, {}, {}, platform_namespace=None, heartbeat=300, now=NOW
    )
    assert [e.reason for e in plan.events] == ["BudgetThresholdCrossed"]
    assert plan.status is not None and plan.status["status"]["thresholdsCrossed"] == [50]
    assert plan.gauges is not None and plan.gauges[0] == "openai"
    later = applied(obj, plan.status)
    again = plan_budget(
        later, prepared, spend, {}, {}, platform_namespace=None, heartbeat=300,
        now=NOW + timedelta(seconds=30),
    )  # fmt: skip
    assert (again.status, again.events) == (None, ())


def test_unknown_outcome_money_is_shown_as_part_of_reserved() -> None:
    obj = budget()
    spend = Spend(spent=ZERO + 10, reserved=ZERO + 3, unknown=ZERO + 1)
    plan = plan_budget(
        obj, prepare_budget(obj, None, NOW), spend, {}, {}, platform_namespace=None,
        heartbeat=300, now=NOW,
    )  # fmt: skip
    assert plan.status is not None
    status = plan.status["status"]
    assert (status["reservedUSD"], status["unknownOutcomeUSD"]) == ("3.00", "1.00")


def test_an_unreadable_ledger_is_reported_without_figures() -> None:
    obj = budget()
    problem = LedgerProblem("LedgerUnavailable", "cannot read the ledger: down")
    plan = plan_budget(
        obj, prepare_budget(obj, None, NOW), problem, {}, {}, platform_namespace=None,
        heartbeat=300, now=NOW,
    )  # fmt: skip
    assert plan.gauges is None
    assert [(e.type, e.reason) for e in plan.events] == [("Warning", "LedgerUnavailable")]


def rollout_route(**rollout: Any) -> dict[str, Any]:
    obj = route()
    obj["spec"]["rollout"] = {
        "candidate": {"default": {"provider": "openai"}},
        "steps": [10, 50, 100],
        "interval": "10s",
        **rollout,
    }
    return obj


def test_a_rollout_pass_renders_first_then_waits_for_its_interval() -> None:
    obj = rollout_route()
    assert pending(obj, NOW).move == "render"  # no status.rollout yet
    state = prepare(obj, [], NOW).rollout
    assert state is not None
    obj["status"] = {"rollout": state.model_dump(mode="json", by_alias=True, exclude_none=True)}
    assert pending(obj, NOW + timedelta(seconds=5)).move == "idle"
    assert pending(obj, NOW + timedelta(seconds=10)).move == "analyse"
    assert pending(route(), NOW).move == "idle"  # no rollout at all


def test_action_annotations_become_spec_fields_or_warnings() -> None:
    assert plan_action(rollout_route(), NOW) is None
    paused = rollout_route()
    paused["metadata"]["annotations"] = {ROLLOUT_ACTION_ANNOTATION: "Pause"}
    plan = plan_action(paused, NOW)
    assert plan is not None and plan.spec == {"rollout": {"paused": True}}
    assert (plan.event.type, plan.event.reason) == ("Normal", "RolloutAction")
    unknown = rollout_route()
    unknown["metadata"]["annotations"] = {ROLLOUT_ACTION_ANNOTATION: "faster"}
    plan = plan_action(unknown, NOW)
    assert plan is not None and plan.spec is None and plan.event.reason == "RolloutActionIgnored"
    restart = rollout_route()
    restart["metadata"]["annotations"] = {ROLLOUT_ACTION_ANNOTATION: "restart"}
    plan = plan_action(restart, NOW)
    assert plan is not None and plan.restart is not None and plan.restart.reason == "Restarted"
    assert plan.restart_event is not None and plan.restart_event.reason == "RolloutStarted"
