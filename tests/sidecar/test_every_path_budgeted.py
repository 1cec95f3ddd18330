"""Every path is budgeted: each route of the sidecar's apps is either listed as calling
no provider, or proven budgeted through the official OpenAI and Anthropic clients.

The routes are enumerated from the apps' routers (``app.router.routes()``), so a new
endpoint fails :func:`test_every_route_is_budgeted_or_calls_no_provider` until it is
listed here. Each provider-calling call (chat, chat stream, embeddings, responses,
responses stream, messages, messages stream) meets an exhausted OpenAI budget:
``Reject`` refuses it (429) and ``FallbackLocal`` answers it locally, and OpenAI's fake
never sees it; nor when it comes through a fallback, a retry, the rollout candidate's
policy or a pinned ``provider/model``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import aiohttp
import anthropic
import openai
import pytest

from aegis.sidecar.http import MODEL_ROUTES, RunningSidecar, build_app
from aegis.sidecar.http.app import build_metrics_app
from aegis.sidecar.ledger.report import iter_entries
from aegis.sidecar.runtime.process import SERVICE_ACCOUNT_ENV
from tests.sidecar.conftest import Fakes, SidecarFactory, client_for

CRITICAL = {"X-Aegis-Quality": "critical", "X-Aegis-Complexity": "high"}  # -> openai
CHAT_MODEL = "openai/gpt-4o"
EMBEDDING_MODEL = "openai/text-embedding-3-small"

# Routes that call no provider, by (method, path); each is checked to call none.
NO_PROVIDER = {
    ("GET", "/v1/models"),
    ("HEAD", "/v1/models"),
    ("GET", "/healthz"),
    ("HEAD", "/healthz"),
    ("GET", "/readyz"),
    ("HEAD", "/readyz"),
    ("*", "/{tail}"),  # 404/405 for everything else
    ("GET", "/metrics"),  # the metrics listener's app
    ("HEAD", "/metrics"),
}


@dataclass(frozen=True)
class Call:
    """One provider-calling call made with an official SDK."""

    name: str
    path: str  # the route it goes through
    run: Callable[[RunningSidecar, str, dict[str, str]], Awaitable[None]]


def _openai(sc: RunningSidecar) -> openai.AsyncOpenAI:
    return client_for(sc)


def _anthropic(sc: RunningSidecar) -> anthropic.AsyncAnthropic:
    root = sc.base_url.removesuffix("/v1")
    return anthropic.AsyncAnthropic(base_url=root, api_key="unused", max_retries=0)


async def chat(sc: RunningSidecar, model: str, headers: dict[str, str]) -> None:
    await _openai(sc).chat.completions.create(
        model=model, messages=[{"role": "user", "content": "hello"}], extra_headers=headers
    )


async def chat_stream(sc: RunningSidecar, model: str, headers: dict[str, str]) -> None:
    stream = await _openai(sc).chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "hello"}],
        stream=True,
        extra_headers=headers,
    )
    async for _ in stream:
        pass


async def embeddings(sc: RunningSidecar, model: str, headers: dict[str, str]) -> None:
    chosen = EMBEDDING_MODEL if model == CHAT_MODEL else model
    await _openai(sc).embeddings.create(model=chosen, input=["hello"], extra_headers=headers)


async def responses(sc: RunningSidecar, model: str, headers: dict[str, str]) -> None:
    await _openai(sc).responses.create(model=model, input="hello", extra_headers=headers)


async def responses_stream(sc: RunningSidecar, model: str, headers: dict[str, str]) -> None:
    stream = await _openai(sc).responses.create(
        model=model, input="hello", stream=True, extra_headers=headers
    )
    async for _ in stream:
        pass


async def messages(sc: RunningSidecar, model: str, headers: dict[str, str]) -> None:
    await _anthropic(sc).messages.create(
        model=model,
        max_tokens=32,
        messages=[{"role": "user", "content": "hello"}],
        extra_headers=headers,
    )


async def messages_stream(sc: RunningSidecar, model: str, headers: dict[str, str]) -> None:
    async with _anthropic(sc).messages.stream(
        model=model,
        max_tokens=32,
        messages=[{"role": "user", "content": "hello"}],
        extra_headers=headers,
    ) as stream:
        async for _ in stream:
            pass


CALLS = [
    Call("chat", "/v1/chat/completions", chat),
    Call("chat-stream", "/v1/chat/completions", chat_stream),
    Call("embeddings", "/v1/embeddings", embeddings),
    Call("responses", "/v1/responses", responses),
    Call("responses-stream", "/v1/responses", responses_stream),
    Call("messages", "/v1/messages", messages),
    Call("messages-stream", "/v1/messages", messages_stream),
]
IDS = [c.name for c in CALLS]


def budget(on_exceeded: str, limit: str = "0", provider: str = "openai") -> Callable[..., None]:
    def edit(document: dict[str, Any]) -> None:
        document["budgets"] = [
            {"name": "paid", "provider": provider, "limitUSD": limit, "onExceeded": on_exceeded}
        ]

    return edit


def both(*edits: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    def edit(document: dict[str, Any]) -> None:
        for one in edits:
            one(document)

    return edit


async def rows(sc: RunningSidecar) -> list[dict[str, Any]]:
    await sc.runtime.ledger.flush()
    return [r async for r in iter_entries(sc.runtime.ledger_url)]


async def refused(call: Call, sc: RunningSidecar, model: str, headers: dict[str, str]) -> str:
    """The call fails with the SDK's 429 (a budget's refusal); its error message."""
    with pytest.raises((openai.RateLimitError, anthropic.RateLimitError)) as caught:
        await call.run(sc, model, headers)
    error = caught.value
    assert isinstance(error, openai.APIStatusError | anthropic.APIStatusError)
    assert error.status_code == 429
    return str(error)


async def test_every_route_is_budgeted_or_calls_no_provider(
    make_sidecar: SidecarFactory,
) -> None:
    """Against the routers themselves: a new route fails here until it is listed."""
    async with make_sidecar() as sc:
        apps = [build_app(sc.runtime), build_metrics_app(sc.runtime)]
    routes = {
        (r.method, r.resource.canonical)
        for app in apps
        for r in app.router.routes()
        if r.resource is not None
    }
    calling = routes - NO_PROVIDER
    assert calling == {("POST", path) for path in MODEL_ROUTES}, "list every new route"
    assert {c.path for c in CALLS} == set(MODEL_ROUTES), "every provider route needs calls"
    assert routes >= NO_PROVIDER, "a route listed as calling no provider is gone"


async def test_routes_listed_as_calling_no_provider_call_none(
    make_sidecar: SidecarFactory, fakes: Fakes
) -> None:
    async with make_sidecar(budget("Reject")) as sc, aiohttp.ClientSession() as http:
        root = sc.base_url.removesuffix("/v1")
        metrics_root = f"http://127.0.0.1:{sc.metrics_port}"
        for method, path in sorted(NO_PROVIDER):
            base = metrics_root if path == "/metrics" else root
            concrete = "/v1/anything" if path == "/{tail}" else path
            verb = "POST" if method == "*" else method
            async with http.request(verb, base + concrete, json={}) as resp:
                assert resp.status in (200, 404), (method, path, resp.status)
    assert fakes.openai.requests == fakes.dashscope.requests == fakes.ollama.requests == []


@pytest.mark.parametrize("call", CALLS, ids=IDS)
async def test_an_exhausted_reject_budget_refuses_every_call(
    make_sidecar: SidecarFactory, fakes: Fakes, call: Call
) -> None:
    async with make_sidecar(budget("Reject")) as sc:
        message = await refused(call, sc, "auto", CRITICAL)
        assert "paid" in message
        found = await rows(sc)
    assert [(r["status"], r["http_status"], r["provider"]) for r in found] == [
        ("refused", 429, "none")
    ]
    assert fakes.openai.requests == []


@pytest.mark.parametrize("call", CALLS, ids=IDS)
async def test_an_exhausted_fallback_budget_answers_every_call_locally(
    make_sidecar: SidecarFactory, fakes: Fakes, call: Call
) -> None:
    async with make_sidecar(budget("FallbackLocal")) as sc:
        await call.run(sc, "auto", CRITICAL)
        [row] = await rows(sc)
    assert (row["status"], row["provider"]) == ("ok", "local")
    assert (row["fallback_reason"] or "").startswith("openai:"), row["fallback_reason"]
    assert fakes.openai.requests == [] and fakes.dashscope.requests == []
    assert len(fakes.ollama.requests) == 1


@pytest.mark.parametrize("call", CALLS, ids=IDS)
async def test_a_fallback_never_reaches_an_exhausted_provider(
    make_sidecar: SidecarFactory, fakes: Fakes, call: Call
) -> None:
    """The local target fails; the fallback chain's paid provider has no money left, so
    the router leaves it out: the answer is the target's failure, and DashScope is
    never called."""
    fakes.ollama.knobs.fail_next = 10
    fakes.ollama.knobs.fail_status = 503
    async with make_sidecar(budget("Reject", provider="dashscope")) as sc:
        with pytest.raises((openai.APIStatusError, anthropic.APIStatusError)) as caught:
            await call.run(sc, "auto", {})
        error = caught.value
        assert isinstance(error, openai.APIStatusError | anthropic.APIStatusError)
        assert error.status_code == 503
        [row] = await rows(sc)
    assert (row["status"], row["http_status"], row["provider"]) == ("error", 503, "none")
    assert row["fallback_reason"] == "local:status_503"
    assert fakes.dashscope.requests == [] and fakes.openai.requests == []
    assert fakes.ollama.requests  # the target was tried (with its retries)


@pytest.mark.parametrize("call", CALLS, ids=IDS)
async def test_a_fallback_after_a_failure_meets_the_budget_at_call_time(
    make_sidecar: SidecarFactory, fakes: Fakes, call: Call
) -> None:
    """OpenAI is the target and fails; DashScope's budget is exhausted (FallbackLocal):
    the request ends on the local provider, DashScope is never called."""
    fakes.openai.knobs.fail_next = 10
    fakes.openai.knobs.fail_status = 500
    async with make_sidecar(budget("FallbackLocal", provider="dashscope")) as sc:
        await call.run(sc, "auto", CRITICAL)
        [row] = await rows(sc)
    assert (row["status"], row["provider"]) == ("ok", "local")
    assert (row["fallback_reason"] or "").startswith("openai:status_500")
    assert fakes.dashscope.requests == []
    assert len(fakes.openai.requests) == 1


def rollout_to_openai(document: dict[str, Any]) -> None:
    """Every request on the candidate arm, whose policy sends everything to OpenAI."""
    document["rollout"] = {
        "candidate": {"default": {"provider": "openai"}, "fallback": ["local"]},
        "weight": 100,
    }


@pytest.mark.parametrize("on_exceeded", ["Reject", "FallbackLocal"])
@pytest.mark.parametrize("call", CALLS, ids=IDS)
async def test_the_rollout_candidate_is_budgeted(
    make_sidecar: SidecarFactory, fakes: Fakes, call: Call, on_exceeded: str
) -> None:
    async with make_sidecar(both(budget(on_exceeded), rollout_to_openai)) as sc:
        if on_exceeded == "Reject":
            await refused(call, sc, "auto", {})
        else:
            await call.run(sc, "auto", {})
        [row] = await rows(sc)
    assert row["arm"] == "candidate"
    expected = ("refused", "none") if on_exceeded == "Reject" else ("ok", "local")
    assert (row["status"], row["provider"]) == expected
    assert fakes.openai.requests == []


@pytest.mark.parametrize("model", ["pinned", "bare"])
@pytest.mark.parametrize("call", CALLS, ids=IDS)
async def test_a_pinned_model_is_budgeted(
    make_sidecar: SidecarFactory, fakes: Fakes, call: Call, model: str
) -> None:
    chosen = CHAT_MODEL if model == "pinned" else CHAT_MODEL.removeprefix("openai/")
    if call.name == "embeddings" and model == "bare":
        chosen = EMBEDDING_MODEL.removeprefix("openai/")
    async with make_sidecar(budget("Reject")) as sc:
        await refused(call, sc, chosen, {})
        [row] = await rows(sc)
    assert (row["status"], row["http_status"]) == ("refused", 429)
    assert fakes.openai.requests == []


SHAPES: dict[str, dict[str, Any]] = {
    "every-cloud-provider": {},  # neither provider nor providers
    "providers": {"providers": ["dashscope", "openai"]},
    "models": {"models": ["gpt-4o*", "text-embedding-*"]},
}


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("call", CALLS, ids=IDS)
async def test_budgets_by_filter_cover_every_call(
    make_sidecar: SidecarFactory, fakes: Fakes, call: Call, shape: str
) -> None:
    """Budgets that name no provider, several providers, or models by glob: automatic
    routing to OpenAI and a pinned OpenAI model are both refused on every endpoint."""

    def filtered(document: dict[str, Any]) -> None:
        spec = {"name": "paid", "limitUSD": "0", "onExceeded": "Reject", **SHAPES[shape]}
        document["budgets"] = [spec]

    async with make_sidecar(filtered) as sc:
        await refused(call, sc, "auto", CRITICAL)
        await refused(call, sc, CHAT_MODEL, {})
        found = await rows(sc)
    assert [r["status"] for r in found] == ["refused", "refused"]
    assert fakes.openai.requests == []


@pytest.mark.parametrize(("running_as", "covered"), [("shop", True), ("batch", False)])
async def test_a_service_account_budget_covers_the_pods_that_run_as_it(
    make_sidecar: SidecarFactory,
    fakes: Fakes,
    monkeypatch: pytest.MonkeyPatch,
    running_as: str,
    covered: bool,
) -> None:
    """The injector's ``AEGIS_SERVICE_ACCOUNT`` decides which pods a ``serviceAccounts``
    budget applies to (cooperative within a namespace)."""
    monkeypatch.setenv(SERVICE_ACCOUNT_ENV, running_as)

    def shop_only(document: dict[str, Any]) -> None:
        document["budgets"] = [
            {
                "name": "paid",
                "provider": "openai",
                "limitUSD": "0",
                "onExceeded": "Reject",
                "serviceAccounts": ["shop"],
            }
        ]

    async with make_sidecar(shop_only) as sc:
        for call in CALLS:
            if covered:
                await refused(call, sc, "auto", CRITICAL)
            else:
                await call.run(sc, "auto", CRITICAL)
        found = await rows(sc)
    assert {r["service_account"] for r in found} == {running_as}
    if covered:
        assert {r["status"] for r in found} == {"refused"} and fakes.openai.requests == []
    else:
        assert {(r["status"], r["provider"]) for r in found} == {("ok", "openai")}
        assert len(fakes.openai.requests) == len(CALLS)


async def test_retries_stay_within_the_limit(make_sidecar: SidecarFactory, fakes: Fakes) -> None:
    """OpenAI fails each first attempt (retried once, within the same reservation);
    requests go on until the budget refuses: the provider's own invoice for what it
    answered stays within the limit and equals the ledger, and nothing reaches it
    after the refusal."""
    limit = Decimal("0.002")
    fakes.openai.set_knobs(prices={"gpt-4o": {"inputPer1M": "2.5", "outputPer1M": "10"}})

    def retrying(document: dict[str, Any]) -> None:
        for provider in document["providers"]:
            if provider["name"] == "openai":
                provider["maxRetries"] = 1

    async with make_sidecar(both(budget("Reject", limit=str(limit)), retrying)) as sc:
        client = _openai(sc)
        answered = 0
        for _ in range(200):
            fakes.openai.knobs.fail_next = 1
            try:
                await client.chat.completions.create(
                    model="auto",
                    messages=[{"role": "user", "content": "hello"}],
                    max_tokens=32,
                    extra_headers=CRITICAL,
                )
            except openai.RateLimitError:
                break
            answered += 1
        else:
            pytest.fail("the budget never refused")
        calls_at_refusal = len(fakes.openai.requests)
        await refused(CALLS[1], sc, "auto", CRITICAL)  # and a stream after it
        found = await rows(sc)
    assert answered >= 2
    assert calls_at_refusal == 2 * answered  # a failed attempt and its retry each
    assert len(fakes.openai.requests) == calls_at_refusal
    invoice = sum((c.cost_usd for c in fakes.openai.state.invoice.calls), Decimal(0))
    assert 0 < invoice <= limit
    assert sum((r["cost_usd"] for r in found), Decimal(0)) == invoice
    assert [r["status"] for r in found[-2:]] == ["refused", "refused"]
