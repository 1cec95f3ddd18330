"""Alert rules (promtool) and the Grafana dashboard, against the metrics the code exports."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.helm import sync
from tests.helm.chart import Helm, one

SERIES = re.compile(r"\baegis_[a-z0-9_]+\b")


def promtool_run(promtool: str, *args: str, cwd: Path) -> str:
    done = subprocess.run(
        [promtool, *args], capture_output=True, text=True, cwd=cwd, timeout=120, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def alerts(groups: dict[str, Any]) -> dict[str, str]:
    return {r["alert"]: r["expr"] for g in groups["groups"] for r in g["rules"] if "alert" in r}


def test_promtool_checks_the_rules_file(promtool: str) -> None:
    out = promtool_run(promtool, "check", "rules", sync.RULES.name, cwd=sync.RULES.parent)
    assert f"SUCCESS: {len(alerts(yaml.safe_load(sync.RULES.read_text())))} rules found" in out


def test_promtool_unit_tests_fire_every_alert(promtool: str) -> None:
    out = promtool_run(promtool, "test", "rules", sync.RULE_TESTS.name, cwd=sync.RULES.parent)
    assert "SUCCESS" in out
    tests = yaml.safe_load(sync.RULE_TESTS.read_text())
    fired = {
        case["alertname"]
        for test in tests["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert fired == set(alerts(yaml.safe_load(sync.RULES.read_text())))


def test_rules_rendered_with_other_values_still_check(
    helm: Helm, promtool: str, tmp_path: Path
) -> None:
    rule = one(
        helm.template(
            "--set", "monitoring.prometheusRule.enabled=true",
            "--set", "monitoring.prometheusRule.budgetWarningRatio=0.5",
            "--set", "monitoring.prometheusRule.latencyProviderRegex=openai|azure-.*",
            "--set", "monitoring.prometheusRule.errorRateRatio=0.05",
            "--set", "monitoring.prometheusRule.for=2m",
        ),
        "PrometheusRule",
    )  # fmt: skip
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rule["spec"]))
    promtool_run(promtool, "check", "rules", "rules.yaml", cwd=tmp_path)


def exported_series() -> set[str]:
    return {series for metric in sync.exported_metrics() for series in metric.series}


def test_rules_use_only_exported_metrics() -> None:
    used = set(SERIES.findall(sync.RULES.read_text()))
    assert used and used <= exported_series(), used - exported_series()


def dashboard_queries(dashboard: dict[str, Any]) -> list[str]:
    queries: list[str] = []
    for panel in dashboard["panels"]:
        queries += [t["expr"] for t in panel.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        query = variable.get("query")
        if isinstance(query, dict):
            queries.append(query["query"])
    queries += [a["expr"] for a in dashboard["annotations"]["list"] if "expr" in a]
    return queries


def test_dashboard_references_only_exported_metrics() -> None:
    dashboard = json.loads(sync.DASHBOARD.read_text())
    used = {name for query in dashboard_queries(dashboard) for name in SERIES.findall(query)}
    assert used <= exported_series(), f"not exported by any registry: {used - exported_series()}"


def test_dashboard_covers_what_operators_watch() -> None:
    dashboard = json.loads(sync.DASHBOARD.read_text())
    assert dashboard["uid"] == "aegis-llm-routing"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    used = {name for query in dashboard_queries(dashboard) for name in SERIES.findall(query)}
    for topic in (
        "aegis_requests_total",  # requests
        "aegis_request_duration_seconds_bucket",  # latency
        "aegis_cost_usd_total",  # cost
        "aegis_budget_utilisation_ratio",  # budget
        "aegis_fallbacks_total",  # fallbacks
        "aegis_privacy_decisions_total",  # privacy reroutes
        "aegis_rollout_weight",  # rollout weight
    ):
        assert topic in used, topic
    # Every panel has a datasource variable, so the dashboard imports into any Grafana.
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}


def test_metrics_reference_is_current() -> None:
    assert sync.METRICS_DOC.read_text() == sync.metrics_doc(), f"run `{sync.COMMAND}`"
