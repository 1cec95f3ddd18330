"""Every series a sidecar serves carries its namespace and route (constant per process)."""

from __future__ import annotations

from typing import Any

import aiohttp
from openai.types.chat import ChatCompletionMessageParam
from prometheus_client.parser import text_string_to_metric_families

from aegis.sidecar.metrics import CONSTANT_LABELS
from tests.sidecar.conftest import SidecarFactory, client_for

USER: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello"}]


async def test_every_served_series_carries_namespace_and_route(
    make_sidecar: SidecarFactory,
) -> None:
    async with make_sidecar() as sc, aiohttp.ClientSession() as http:
        await client_for(sc).chat.completions.create(model="auto", messages=USER)
        await client_for(sc).embeddings.create(model="auto", input=["hello"])
        async with http.get(f"http://127.0.0.1:{sc.metrics_port}/metrics") as resp:
            served = list(text_string_to_metric_families(await resp.text()))
        in_process = list(sc.runtime.metrics.registry.collect())
    samples = [s for family in served for s in family.samples]
    assert len(samples) > 50
    assert {(s.labels["namespace"], s.labels["route"]) for s in samples} == {("tests", "rag-api")}
    assert set(CONSTANT_LABELS) == {"namespace", "route"}
    # The same series as the registry holds: nothing added, nothing split.
    registry = sorted(
        (s.name, tuple(sorted(s.labels.items()))) for f in in_process for s in f.samples
    )
    stripped = sorted(
        (s.name, tuple(sorted((k, v) for k, v in s.labels.items() if k not in CONSTANT_LABELS)))
        for s in samples
        if s.name != "aegis_config_info"
    )
    assert stripped == [r for r in registry if r[0] != "aegis_config_info"]
    [info] = [s for s in samples if s.name == "aegis_config_info"]
    assert info.labels == {
        "hash": sc.runtime.current.hash,
        "namespace": "tests",
        "route": "rag-api",
    }


async def test_budgets_of_one_name_in_two_scopes_are_two_series(
    make_sidecar: SidecarFactory,
) -> None:
    """A namespaced budget and a Cluster budget may share a name (their ledger keys
    differ); their gauges must not overwrite each other."""

    def edit(doc: dict[str, Any]) -> None:
        doc["budgets"] = [
            {"name": "team", "provider": "openai", "limitUSD": "5"},
            {"name": "team", "provider": "openai", "limitUSD": "7", "scope": "Cluster"},
        ]

    async with (
        make_sidecar(edit) as sc,
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{sc.metrics_port}/metrics") as resp,
    ):
        served = list(text_string_to_metric_families(await resp.text()))
    limits = {
        s.labels["budget_key"]: s.value
        for family in served
        for s in family.samples
        if s.name == "aegis_budget_limit_usd"
    }
    assert limits == {"Namespace/tests/team": 5.0, "Cluster//team": 7.0}
