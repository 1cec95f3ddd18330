"""Budget filters, periods and Notify: which budgets a call reserves in, each in its
own period, all or nothing; Notify lets a call go on and counts it (in the book and
through a running sidecar, with the official openai client)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import aiohttp
import openai
import pytest

from aegis.sidecar.budgets import BudgetBook, Exceeded, Reservation
from aegis.sidecar.contract import BudgetSpec, ConfigError, SidecarConfig, decode
from aegis.sidecar.routing.ports import BUDGET_UNAVAILABLE, StaticBudgetView
from tests.sidecar.conftest import Fakes, SidecarFactory, client_for
from tests.sidecar.shared_helpers import sample

D = Decimal
NOV = datetime(2026, 11, 10, 12, 0, tzinfo=UTC)  # a Tuesday
BATCH = {"X-Aegis-Batch-Size": "20"}  # the route's "batch" rule: dashscope


def spec(name: str, limit: str = "10", **fields: Any) -> BudgetSpec:
    return decode(BudgetSpec, {"name": name, "limitUSD": limit, **fields})


def reserved(result: Reservation | Exceeded) -> Reservation:
    assert isinstance(result, Reservation), result
    return result


def test_filters_decide_whether_a_budget_applies() -> None:
    anyone = spec("any")  # no provider named: every cloud provider
    assert anyone.applies("openai") and not anyone.applies("local", local=True)
    several = spec("two", providers=["openai", "anthropic"])
    assert several.applies("anthropic") and not several.applies("dashscope")
    glob = spec("g", provider="openai", models=["gpt-4o*", "o[13]-*"])
    assert glob.applies("openai", models=["gpt-4o-mini"])
    assert glob.applies("openai", models=["o3-mini"])
    assert not glob.applies("openai", models=["gpt-3.5-turbo", "o2-x"])
    assert glob.applies("openai", models=["gpt-3.5-turbo", "gpt-4o"])  # either may answer
    assert glob.applies("openai")  # models unknown: it applies (never escapes for want of it)
    classes = spec("c", dataClasses=["internal", "pii"])
    assert classes.applies("openai", data_class="pii")
    assert not classes.applies("openai", data_class="public")
    accounts = spec("s", serviceAccounts=["batch", "etl.jobs"])
    assert accounts.applies("openai", service_account="etl.jobs")
    assert not accounts.applies("openai", service_account="web")
    assert accounts.applies("openai")  # the pod's ServiceAccount unknown


def test_spec_validation_names_the_field() -> None:
    with pytest.raises(ConfigError, match="set provider or providers, not both"):
        spec("x", provider="openai", providers=["anthropic"])
    with pytest.raises(ConfigError, match="serviceAccounts: only a namespaced budget"):
        spec("x", scope="Cluster", serviceAccounts=["web"])
    with pytest.raises(ConfigError, match="models: entries must be unique"):
        spec("x", models=["a*", "a*"])
    with pytest.raises(ConfigError, match="period"):
        spec("x", period="Hourly")
    with pytest.raises(ConfigError, match=r"models\.0: Expected `str` matching regex"):
        spec("x", models=["gpt 4"])
    assert spec("x").period.value == "Monthly"  # an existing config keeps its meaning


def test_config_checks_every_named_provider_and_budget_keys() -> None:
    def config(*budgets: dict[str, Any]) -> SidecarConfig:
        return decode(
            SidecarConfig,
            {
                "providers": [
                    {"name": "local", "type": "ollama", "models": {"default": "m"}},
                    {"name": "openai", "type": "openai", "models": {"default": "gpt-4o"}},
                ],
                "default": {"provider": "local"},
                "budgets": list(budgets),
            },
        )

    with pytest.raises(ValueError, match=r"budgets\[0\]\.providers: unknown provider 'nope'"):
        config({"name": "a", "providers": ["openai", "nope"], "limitUSD": "1"})
    with pytest.raises(ValueError, match="duplicate budget Namespace/default/a"):
        config({"name": "a", "limitUSD": "1"}, {"name": "a", "limitUSD": "2"})
    both = config(
        {"name": "a", "limitUSD": "1"},
        {"name": "a", "limitUSD": "2", "scope": "Cluster"},  # another key: allowed
        {"name": "old", "provider": "openai", "limitUSD": "3"},  # the old shape still valid
    )
    assert [b.name for b in both.budgets_for("openai")] == ["a", "a", "old"]
    assert both.budgets_for("local") == []  # a budget naming no provider skips local ones


def test_a_call_reserves_in_every_budget_that_applies_each_in_its_period() -> None:
    book = BudgetBook(
        [
            spec("day", "3", provider="openai", period="Daily", timezone="Asia/Kolkata"),
            spec("week", "5", period="Weekly"),
            spec("month", "9", provider="openai", models=["gpt-4o*"]),
            spec("pii", "1", dataClasses=["pii"]),
            spec("other", "1", provider="dashscope"),
        ],
        clock=lambda: NOV,
        namespace="team",
        local_providers=["local"],
    )
    call = reserved(book.reserve("openai", D(1), models=["gpt-4o"], data_class="internal"))
    assert call.charges == (
        "Namespace/team/day@2026-11-10,Namespace/team/week@2026-W46,Namespace/team/month@2026-11"
    )
    assert call.budgets == ("day", "week", "month")
    cheaper = reserved(book.reserve("openai", D(1), models=["gpt-3.5"], data_class="pii"))
    assert cheaper.budgets == ("day", "week", "pii")
    local = reserved(book.reserve("local", D(0), models=["gemma"], data_class="pii"))
    assert local.budgets == ()
    # All or nothing: "pii" (1 USD, spent) refuses, and nothing is reserved anywhere.
    refused = book.reserve("openai", D("0.5"), models=["gpt-4o"], data_class="pii")
    assert isinstance(refused, Exceeded) and refused.budget.name == "pii"
    assert {s.name: s.reserved for s in book.snapshot()} == {
        "day": 2,
        "week": 2,
        "month": 1,
        "pii": 1,
        "other": 0,
    }
    # The day (3 USD) fills up; past Kolkata's midnight (18:30 UTC) a new day begins.
    reserved(book.reserve("openai", D(1), models=["x"], data_class="internal"))
    full = book.reserve("openai", D(1), models=["x"], data_class="internal")
    assert isinstance(full, Exceeded) and (full.budget.name, full.period) == ("day", "2026-11-10")
    late = datetime(2026, 11, 10, 18, 30, tzinfo=UTC)
    tomorrow = reserved(book.reserve("openai", D(1), late, models=["x"], data_class="internal"))
    assert tomorrow.charges == "Namespace/team/day@2026-11-11,Namespace/team/week@2026-W46"


def test_service_account_filter_follows_the_pod() -> None:
    budgets = [spec("etl", "1", serviceAccounts=["etl"])]
    web = BudgetBook(budgets, clock=lambda: NOV, service_account="web")
    assert reserved(web.reserve("openai", D(5))).budgets == ()
    etl = BudgetBook(budgets, clock=lambda: NOV, service_account="etl")
    assert isinstance(etl.reserve("openai", D(5)), Exceeded)


def test_notify_goes_ahead_counts_and_never_lets_a_strict_budget_slip() -> None:
    book = BudgetBook(
        [
            spec("watch", "1", provider="openai", onExceeded="Notify"),
            spec("cap", "3", provider="openai", onExceeded="Reject"),
        ],
        clock=lambda: NOV,
    )
    first = reserved(book.reserve("openai", D("0.8")))
    assert first.notified == ()
    second = reserved(book.reserve("openai", D("0.8")))  # beyond watch's 1 USD: goes on
    assert second.notified == ("Namespace//watch",)
    assert book.notified == {"Namespace//watch": 1}
    assert book.can_cover("openai", D("1.3")).ok  # watch always covers, cap has 1.4 left
    refused = book.reserve("openai", D("1.5"))  # cap (Reject) still holds
    assert isinstance(refused, Exceeded) and refused.budget.name == "cap"
    assert not book.can_cover("openai", D("1.5")).ok
    book.settle(first, D("0.8"))
    book.settle(second, D("0.8"))
    [watch, cap] = book.snapshot()
    assert (watch.spent, watch.remaining, cap.spent) == (D("1.6"), D(0), D("1.6"))
    assert book.notified == {"Namespace//watch": 1}
    # While the shared ledger is unreachable a Notify-only call still goes on.
    alone = BudgetBook([spec("watch", "1", onExceeded="Notify")], clock=lambda: NOV)
    alone.blocked = BUDGET_UNAVAILABLE
    assert reserved(alone.reserve("openai", D(5))).notified == ()
    book.blocked = BUDGET_UNAVAILABLE
    unavailable = book.reserve("openai", D("0.1"))
    assert isinstance(unavailable, Exceeded) and unavailable.reason == BUDGET_UNAVAILABLE


def test_static_view_uses_the_filters() -> None:
    view = StaticBudgetView(
        [spec("g", "1", provider="openai", models=["gpt-4o"]), spec("n", "0", onExceeded="Notify")],
    )
    assert not view.can_cover("openai", D(2), models=["gpt-4o"]).ok
    assert view.can_cover("openai", D(2), models=["gpt-4o-mini"]).ok


def with_budgets(*budgets: dict[str, Any]) -> Any:
    def edit(doc: dict[str, Any]) -> None:
        doc["budgets"] = list(budgets)

    return edit


async def test_notify_through_the_sidecar_answers_and_counts(
    make_sidecar: SidecarFactory, fakes: Fakes
) -> None:
    notify = {"name": "ds", "provider": "dashscope", "limitUSD": "0.000001", "onExceeded": "Notify"}
    async with make_sidecar(with_budgets(notify)) as sc:
        client = client_for(sc)
        for _ in range(4):
            raw = await client.chat.completions.with_raw_response.create(
                model="auto",
                messages=[{"role": "user", "content": "Say hello"}],
                max_tokens=50,
                extra_headers=BATCH,
            )
            assert raw.headers["x-aegis-provider"] == "dashscope"  # no fallback, no refusal
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{sc.metrics_port}/metrics") as resp,
        ):
            metrics = await resp.text()
        [snapshot] = sc.runtime.budgets.snapshot()
    counted = sample(metrics, "aegis_budget_notify_exceeded_total", budget="Namespace/tests/ds")
    assert counted == 4
    assert snapshot.spent > snapshot.limit


async def test_a_model_filter_does_not_stop_other_models(
    make_sidecar: SidecarFactory, fakes: Fakes
) -> None:
    """A Reject budget on qwen-max* leaves qwen-plus calls (the route's model) alone;
    one on qwen-* refuses them."""
    narrow = {
        "name": "max",
        "provider": "dashscope",
        "models": ["qwen-max*"],
        "limitUSD": "0",
        "onExceeded": "Reject",
    }
    async with make_sidecar(with_budgets(narrow)) as sc:
        raw = await client_for(sc).chat.completions.with_raw_response.create(
            model="auto", messages=[{"role": "user", "content": "hi"}], extra_headers=BATCH
        )
        assert raw.headers["x-aegis-provider"] == "dashscope"
    wide = {**narrow, "models": ["qwen-*"]}
    async with make_sidecar(with_budgets(wide)) as sc:
        with pytest.raises(openai.RateLimitError, match="Budget 'max'") as info:
            await client_for(sc).chat.completions.create(
                model="auto", messages=[{"role": "user", "content": "hi"}], extra_headers=BATCH
            )
        assert info.value.code == "budget_exceeded"
