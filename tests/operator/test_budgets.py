"""LLMBudget status, gauges and alert events from the Postgres ledger."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from tests.controlplane.kube import Kube
from tests.controlplane.postgres import PostgresServer, find_bin_dir
from tests.operator.harness import (
    OperatorProcess,
    condition,
    delete_aegis_objects,
    events,
    get,
    poll,
    status_field,
    wait_condition,
)
from tests.operator.ledger import charge, lease, row

pytestmark = pytest.mark.kube


def budget(name: str, provider: str, limit: float, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "aegis.io/v1alpha1",
        "kind": "LLMBudget",
        "metadata": {"name": name},
        "spec": {"provider": provider, "limitUSD": limit, **spec},
    }


def status_is(kube: Kube, ns: str, name: str, **wanted: Any) -> Callable[[], dict[str, Any] | None]:
    def check() -> dict[str, Any] | None:
        status = (get(kube, "llmbudget", name, ns) or {}).get("status") or {}
        return status if all(status.get(k) == v for k, v in wanted.items()) else None

    return check


def test_status_gauges_and_one_event_per_threshold(
    kube: Kube, ns: str, operator: OperatorProcess, operator_ledger: str
) -> None:
    provider = f"p{uuid.uuid4().hex[:8]}"  # the ledger is shared: a provider of our own
    kube.apply(budget("monthly", provider, 100, alertThresholds=[80, 90, 100]), ns)
    poll(status_is(kube, ns, "monthly", spentUSD="0.00", utilisation="0.0%"), what="empty")
    labels = {"budget": "monthly", "namespace": ns, "provider": provider}
    assert operator.metric("aegis_budget_limit_usd", **labels) == 100.0

    charge(
        operator_ledger,
        "monthly",
        [row(provider, "20.5", namespace=ns), row(provider, "29.5", namespace=ns)],
    )
    started = time.monotonic()
    status = poll(status_is(kube, ns, "monthly", spentUSD="50.00"), timeout=10, what="50 USD")
    assert time.monotonic() - started < operator.budget_interval + 3  # one timer interval
    assert (status["remainingUSD"], status["utilisation"], status["limitUSD"]) == (
        "50.00", "50.0%", "100.00",
    )  # fmt: skip
    assert status["reservedUSD"] == "0.00" and status["thresholdsCrossed"] == []
    assert status["periodStart"] == f"{status['period']}-01T00:00:00Z"
    assert operator.metric("aegis_budget_spent_usd", **labels) == 50.0
    assert operator.metric("aegis_budget_utilisation_ratio", **labels) == 0.5
    assert operator.metric("aegis_budget_remaining_usd", **labels) == 50.0
    assert not events(kube, ns, "monthly", "BudgetThresholdCrossed")

    charge(operator_ledger, "monthly", [row(provider, "35", namespace=ns)])
    status = poll(status_is(kube, ns, "monthly", spentUSD="85.00"), timeout=10, what="85 USD")
    assert status["thresholdsCrossed"] == [80]
    warning = condition({"status": status}, "Warning")
    assert warning is not None and (warning["status"], warning["reason"]) == (
        "True", "ThresholdCrossed",
    )  # fmt: skip
    crossed = poll(lambda: events(kube, ns, "monthly", "BudgetThresholdCrossed"), what="event")
    assert len(crossed) == 1 and crossed[0]["type"] == "Warning"
    assert "crossed the 80% alert threshold" in crossed[0]["message"]

    # more ledger reads (the sync timestamp moves) do not repeat the announcement
    def last_sync() -> float:
        return operator.metric("aegis_budget_last_sync_timestamp_seconds", **labels) or 0

    synced = last_sync()
    poll(lambda: last_sync() > synced + 2 * operator.budget_interval, what="more ledger reads")
    assert len(events(kube, ns, "monthly", "BudgetThresholdCrossed")) == 1

    charge(operator_ledger, "monthly", [row(provider, "16", namespace=ns)])
    status = poll(status_is(kube, ns, "monthly", spentUSD="101.00"), timeout=10, what="101 USD")
    assert (status["remainingUSD"], status["thresholdsCrossed"]) == ("0.00", [80, 90, 100])
    exceeded = condition({"status": status}, "Exceeded")
    assert exceeded is not None and (exceeded["status"], exceeded["reason"]) == (
        "True", "LimitReached",
    )  # fmt: skip
    assert "fall back to local providers" in exceeded["message"]
    poll(lambda: len(events(kube, ns, "monthly", "BudgetThresholdCrossed")) == 2, what="90 %")
    assert len(poll(lambda: events(kube, ns, "monthly", "BudgetExceeded"), what="100 %")) == 1
    assert operator.metric("aegis_budget_exceeded", **labels) == 1.0
    row_text = kube.kubectl("get", "llmbudget", "monthly", "-n", ns, "--no-headers").stdout
    assert row_text.split()[1:7] == [
        status["period"], "100.00", "101.00", "0.00", status["periodEnd"], "True",
    ]  # fmt: skip

    kube.kubectl("delete", "llmbudget", "monthly", "-n", ns)
    poll(lambda: operator.metric("aegis_budget_limit_usd", **labels) is None, what="gauges gone")


def test_budget_scope_routes_and_platform_namespace(
    kube: Kube, ns: str, operator: OperatorProcess
) -> None:
    route = {
        "apiVersion": "aegis.io/v1alpha1",
        "kind": "LLMRoute",
        "metadata": {"name": "chat"},
        "spec": {
            "providers": [
                {"name": "local", "type": "ollama", "models": {"default": "gemma3:4b"}},
                {"name": "openai", "type": "openai", "models": {"default": "gpt-4o-mini"}},
            ],
            "default": {"provider": "local"},
        },
    }
    kube.apply(route, ns)
    kube.apply(budget("team-openai", "openai", 10, routes=["chat", "other"]), ns)
    poll(status_is(kube, ns, "team-openai", routes=f"{ns}/chat"), what="route listed")

    platform = operator.platform_namespace
    name = f"global-{ns}"
    kube.apply(budget(name, "openai", 50, namespaces=[ns]), platform)
    try:
        poll(status_is(kube, platform, name, routes=f"{ns}/chat"), what="cross-namespace scope")
        both = f"{platform}/{name},{ns}/team-openai"
        poll(
            lambda: status_field(kube, "llmroute", "chat", ns, "budgets") == both,
            what="platform budget rendered",
        )
    finally:
        kube.kubectl("delete", "llmbudget", name, "-n", platform)
    poll(
        lambda: status_field(kube, "llmroute", "chat", ns, "budgets") == f"{ns}/team-openai",
        what="platform budget removed from the route",
    )

    # outside the platform namespace, spec.namespaces is refused (and says so)
    kube.apply(budget("sneaky", "openai", 0, namespaces=["kube-system"]), ns)
    ready = wait_condition(kube, "llmbudget", "sneaky", ns, reason="ScopeNotAllowed")
    assert f"applies to routes in {ns} only" in ready["message"]


def test_invalid_time_zone_and_ledger_outage(
    kube: Kube, ns: str, operator: OperatorProcess, postgres: PostgresServer
) -> None:
    # an unknown zone is refused by the API server (CEL) before the operator sees it
    mars = budget("mars", "openai", 10, timezone="Mars/Olympus_Mons")
    refused = kube.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(mars), check=False)
    assert refused.returncode != 0 and "spec.timezone" in refused.stderr

    kube.apply(budget("tokyo", "openai", 10, timezone="Asia/Tokyo"), ns)
    poll(status_is(kube, ns, "tokyo", limitUSD="10.00"), what="synced")
    postgres.stop()
    try:
        down = wait_condition(kube, "llmbudget", "tokyo", ns, reason="LedgerUnavailable")
        assert "cannot read the ledger" in down["message"]
        assert operator.metric("aegis_operator_ledger_up") == 0.0
        status = (get(kube, "llmbudget", "tokyo", ns) or {})["status"]
        assert status["limitUSD"] == "10.00"  # the last figures stay
    finally:
        postgres.start()
    wait_condition(kube, "llmbudget", "tokyo", ns, reason="Synced", timeout=30)
    assert operator.metric("aegis_operator_ledger_up") == 1.0


def test_leased_money_is_reserved_and_namesakes_keep_their_own_money(
    kube: Kube, ns: str, operator: OperatorProcess, operator_ledger: str
) -> None:
    provider, name = f"p{uuid.uuid4().hex[:8]}", f"b{uuid.uuid4().hex[:8]}"
    kube.apply(budget(name, provider, 100), ns)
    poll(status_is(kube, ns, name, spentUSD="0.00"), what="the limit in the ledger")
    charge(operator_ledger, name, [row(provider, "30", namespace=ns)])
    lease(operator_ledger, namespace=ns, budget=name, amount="10")
    status = poll(status_is(kube, ns, name, reservedUSD="10.00", spentUSD="30.00"), what="lease")
    assert (status["remainingUSD"], status["utilisation"]) == ("60.00", "30.0%")
    labels = {"budget": name, "namespace": ns, "provider": provider}
    assert operator.metric("aegis_budget_reserved_usd", **labels) == 10.0

    # A budget of the same name and provider in another namespace is another budget:
    # each shows its own spend, and neither is in conflict.
    other = kube.create_namespace()
    try:
        kube.apply(budget(name, provider, 500), other)
        poll(status_is(kube, other, name, spentUSD="0.00"), what="the namesake synced")
        charge(operator_ledger, name, [row(provider, "7", namespace=other)])
        poll(status_is(kube, other, name, spentUSD="7.00", reservedUSD="0.00"), what="its own")
        wait_condition(kube, "llmbudget", name, other, reason="Synced")
        mine = poll(status_is(kube, ns, name, spentUSD="30.00"), what="mine unchanged")
        assert mine["reservedUSD"] == "10.00"
        wait_condition(kube, "llmbudget", name, ns, reason="Synced")
    finally:
        delete_aegis_objects(kube, other)
        kube.delete_namespace(other)


@contextmanager
def table_locked(dsn: str, table: str) -> Iterator[None]:
    """``table`` locked against readers and writers by another session (psql's, held
    open) until the block ends."""
    psql = subprocess.Popen(
        [str(find_bin_dir() / "psql"), "-XAtq", "-v", "ON_ERROR_STOP=1", "-d", dsn],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert psql.stdin is not None and psql.stdout is not None
    try:
        psql.stdin.write(f"BEGIN;\nLOCK TABLE {table} IN ACCESS EXCLUSIVE MODE;\nSELECT 'held';\n")
        psql.stdin.flush()
        assert psql.stdout.readline().strip() == "held"
        yield
    finally:
        psql.communicate("COMMIT;\n", timeout=30)


def test_a_budget_deleted_during_its_sync_goes_when_the_sync_ends(
    kube: Kube, ns: str, operator: OperatorProcess, operator_ledger: str
) -> None:
    """The operator finalizes a budget only once its running sync timer has stopped:
    deleted while that sync waits on the ledger, the budget goes soon after the wait
    ends, not at kopf's next look a minute later."""
    provider, name = f"p{uuid.uuid4().hex[:8]}", f"b{uuid.uuid4().hex[:8]}"
    kube.apply(budget(name, provider, 10), ns)
    poll(status_is(kube, ns, name, spentUSD="0.00"), what="the first sync")
    labels = {"budget": name, "namespace": ns, "provider": provider}

    def sync_stuck() -> bool:  # its last sync is older than three intervals
        synced = operator.metric("aegis_budget_last_sync_timestamp_seconds", **labels)
        return synced is not None and time.time() - synced > 3 * operator.budget_interval

    with table_locked(operator_ledger, "aegis.budget_limits"):  # every sync writes it first
        poll(sync_stuck, what="the budget's sync waiting on the ledger")
        kube.kubectl("delete", "llmbudget", name, "-n", ns, "--wait=false")
        poll(
            lambda: ((get(kube, "llmbudget", name, ns) or {}).get("metadata") or {}).get(
                "deletionTimestamp"
            ),
            what="the deletion under way",
        )
        assert get(kube, "llmbudget", name, ns) is not None  # held by its finalizer
    poll(
        lambda: get(kube, "llmbudget", name, ns) is None,
        timeout=15,
        what="the budget gone once its sync ended",
    )
    poll(lambda: operator.metric("aegis_budget_limit_usd", **labels) is None, what="gauges gone")
