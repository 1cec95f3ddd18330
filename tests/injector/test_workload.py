"""The workload and ServiceAccount an injected sidecar records on its ledger rows."""

from __future__ import annotations

from typing import Any

import pytest

from aegis.operator.injector import admission, workload
from aegis.sidecar.runtime import process
from tests.injector.helpers import SIDECAR, apply, env_of, pod, route


def owned(
    kind: str, name: str, *, labels: dict[str, str] | None = None, controller: bool = True
) -> dict[str, Any]:
    """A pod as the controller of ``kind``/``name`` creates it (named by the API server)."""
    created = pod("", labels=labels)
    del created["metadata"]["name"]
    created["metadata"]["generateName"] = f"{name}-"
    created["metadata"]["ownerReferences"] = [
        {
            "apiVersion": "apps/v1" if kind != "Job" else "batch/v1",
            "kind": kind,
            "name": name,
            "uid": "6f1c2a3e-0000-4000-8000-000000000001",
            "controller": controller,
            "blockOwnerDeletion": True,
        }
    ]
    return created


@pytest.mark.parametrize(
    ("kind", "name", "labels", "expected"),
    [
        ("ReplicaSet", "web-7d9f8b6c5d", {"pod-template-hash": "7d9f8b6c5d"}, "Deployment/web"),
        (
            "ReplicaSet",
            "shop-api-v2-5c4b9",
            {"pod-template-hash": "5c4b9"},
            "Deployment/shop-api-v2",
        ),
        ("ReplicaSet", "by-hand", None, "ReplicaSet/by-hand"),  # no template hash
        ("ReplicaSet", "web-other", {"pod-template-hash": "7d9f"}, "ReplicaSet/web-other"),
        ("StatefulSet", "db", None, "StatefulSet/db"),
        ("DaemonSet", "agent", None, "DaemonSet/agent"),
        ("ReplicationController", "legacy", None, "ReplicationController/legacy"),
        ("Job", "nightly-report-29412360", None, "CronJob/nightly-report"),  # a CronJob's run
        ("Job", "backfill", None, "Job/backfill"),
        ("Job", "release-2026", None, "Job/release-2026"),  # 4 digits: not a CronJob's
        ("Job", "-29412360", None, "Job/-29412360"),
        ("Rollout", "canary", None, "Rollout/canary"),  # any other controller
    ],
)
def test_the_workload_is_the_controlling_owner(
    kind: str, name: str, labels: dict[str, str] | None, expected: str
) -> None:
    assert workload.workload_of(owned(kind, name, labels=labels)) == expected


def test_a_bare_pod_is_its_own_workload() -> None:
    assert workload.workload_of(pod("debug")) == "Pod/debug"
    unnamed = pod("")
    unnamed["metadata"] = {"generateName": "scratch-"}
    assert workload.workload_of(unnamed) == "Pod/scratch-"
    assert workload.workload_of({"metadata": {}}) == "Pod/unnamed"


def test_the_controller_reference_wins_over_other_owners() -> None:
    created = owned("StatefulSet", "db")
    created["metadata"]["ownerReferences"].insert(
        0, {"apiVersion": "v1", "kind": "ConfigMap", "name": "cfg", "uid": "u"}
    )
    assert workload.workload_of(created) == "StatefulSet/db"
    created["metadata"]["ownerReferences"][1]["controller"] = False
    assert workload.workload_of(created) == "ConfigMap/cfg"  # none controls: the first


def test_the_injected_sidecar_gets_workload_and_service_account() -> None:
    created = owned("ReplicaSet", "web-7d9f8b6c5d", labels={"pod-template-hash": "7d9f8b6c5d"})
    created["metadata"]["labels"]["app"] = "web"
    request = admission.PodRequest("team", "CREATE", "Pod", "", created)
    decision = admission.decide(
        request,
        "namespace",
        [route(selector={"matchLabels": {"app": "web"}})],
        SIDECAR,
        native=True,
        version="t",
        never_injected=frozenset(),
    )
    assert decision.outcome == "injected", decision.message
    [sidecar] = apply(created, decision.patch)["spec"]["initContainers"]
    env = env_of(sidecar)
    assert env[process.WORKLOAD_ENV] == "Deployment/web"
    assert env[process.SERVICE_ACCOUNT_ENV] == {
        "fieldRef": {"apiVersion": "v1", "fieldPath": "spec.serviceAccountName"}
    }
    # The names the injector writes are the names the sidecar reads.
    assert (workload.WORKLOAD_ENV, workload.SERVICE_ACCOUNT_ENV) == (
        process.WORKLOAD_ENV,
        process.SERVICE_ACCOUNT_ENV,
    )
