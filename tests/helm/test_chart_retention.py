"""The ledger's retention CronJob: off by default, its arguments and volumes, and the
values it refuses (offline, rendered by the pinned helm)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.helm import sync
from tests.helm.chart import Helm, objects_by_kind, one

ON = {"retention": {"enabled": True, "keepMonths": 13, "exportClaim": "ledger-exports"}}


def pod(cronjob: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return spec


def test_off_by_default(helm: Helm) -> None:
    assert "CronJob" not in objects_by_kind(helm.template())


def test_exports_then_drops_as_the_owner_once_at_a_time(helm: Helm) -> None:
    cronjob = one(helm.template(values=ON), "CronJob", "-ledger-retention")
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    assert cronjob["metadata"]["labels"]["app.kubernetes.io/component"] == "ledger-retention"
    spec = pod(cronjob)
    [container] = spec["containers"]
    assert container["args"] == [
        "ledger", "retention", "--url", "$(AEGIS_LEDGER_DSN)", "--keep-months", "13",
        "--export-dir", "/export", "--export-format", "csv",
    ]  # fmt: skip
    [dsn] = container["env"]
    assert dsn["valueFrom"]["secretKeyRef"]["key"] == "dsn"  # the owner's key
    assert {m["mountPath"] for m in container["volumeMounts"]} == {"/tmp", "/export"}
    claims = [v["persistentVolumeClaim"] for v in spec["volumes"] if "persistentVolumeClaim" in v]
    assert claims == [{"claimName": "ledger-exports"}]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert spec["automountServiceAccountToken"] is False
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])


def test_drops_without_an_export_only_when_told(helm: Helm) -> None:
    values = {"retention": {"enabled": True, "export": False, "keepMonths": 3}}
    container = pod(one(helm.template(values=values), "CronJob"))["containers"][0]
    assert container["args"][-3:] == ["--keep-months", "3", "--no-export"]
    assert [m["mountPath"] for m in container["volumeMounts"]] == ["/tmp"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "retention.enabled=true"], "retention.exportClaim is required"),
        (["--set", "retention.keepMonths=1"], "keepMonths"),
        (["--set", "retention.format=xml"], "format"),
    ],
)
def test_refused_values(helm: Helm, args: list[str], message: str) -> None:
    done = helm.run("template", "aegis", str(sync.CHART), *args, check=False)
    assert done.returncode != 0
    assert message in done.stderr, done.stderr
