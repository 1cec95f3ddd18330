"""The whole product end to end on the real node, through `helm install`: the scenarios.

One `helm install` (the session's ``release``: operator, injector and its webhook,
CRDs, RBAC, route policy, the in-chart PostgreSQL ledger migrated by the chart's Job)
and one shop (the package's ``shop`` fixture, :mod:`tests.node.product`: fake upstream
pods behind Services, an ``LLMRoute``, two ``LLMBudget``s, an opted-in app Deployment)
serve every scenario, in file order; the faults follow in ``test_product_faults.py``,
against the same shop, and the last one uninstalls the release. Each test prints what
it shows (and what it cost) to the log, outside pytest's capture.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import time
from decimal import Decimal
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tests.controlplane.otelcol import attributes_of, attrs
from tests.controlplane.procs import wait_until
from tests.node.conftest import NodeCluster, Say, Traces
from tests.node.product import NS, ROUTE, Shop
from tests.node.product_checks import (
    answered_ids,
    platform_view,
    wait_in_ledger,
)
from tests.node.release import POSTGRES_POD, Release
from tests.node.workloads import pod

pytestmark = [
    pytest.mark.node,
    pytest.mark.slow,
    pytest.mark.timeout(600),
    pytest.mark.usefixtures("timed"),
]

PII = "Please update the record of jane.doe@example.com before Friday."


def test_install_runs_every_part(
    cluster: NodeCluster, release: Release, shop: Shop, say: Say
) -> None:
    for component in ("operator", "injector", "postgresql"):
        pods = release.pods(component)
        assert pods and all(
            all(s["ready"] for s in p["status"]["containerStatuses"]) for p in pods
        ), (component, pods)
    # The chart's migration Job ran (post-install hook): the schema is at its head.
    version = release.psql("SELECT version_num FROM public.aegis_ledger_version")
    roles = release.psql("SELECT string_agg(rolname, ',' ORDER BY rolname) FROM pg_roles")
    assert version, version
    assert f"aegis_ns_{NS}" in roles.split(","), roles
    say(f"ledger schema {version}; roles {roles}")
    # The injector made its CA and serving certificate and put the CA in the webhook.
    webhook = cluster.kube.kubectl_json("get", "mutatingwebhookconfiguration", "aegis-injector")
    bundles = {w["name"]: bool(w["clientConfig"].get("caBundle")) for w in webhook["webhooks"]}
    assert bundles == {"pod.inject.aegis.io": True, "namespace.inject.aegis.io": True}, bundles
    # The operator rendered the route, with the budgets that apply, into its ConfigMap.
    configmap = cluster.kube.kubectl_json("-n", NS, "get", "configmap", f"aegis-route-{ROUTE}")
    config = configmap["data"]["config.yaml"]
    assert "openai-monthly" in config and "dashscope-monthly" in config, config
    assert "sk-" not in config  # keys stay in Secrets
    say(f"$ kubectl -n {NS} get llmroutes,llmbudgets\n{platform_view(cluster)}")


def test_app_pod_runs_the_injected_native_sidecar(shop: Shop, say: Say) -> None:
    pod = shop.app_pod()
    (sidecar,) = [c for c in pod["spec"].get("initContainers", []) if c["name"] == "aegis-sidecar"]
    assert sidecar.get("restartPolicy") == "Always", sidecar
    statuses = pod["status"]["initContainerStatuses"] + pod["status"]["containerStatuses"]
    running = {s["name"]: ("running" in s["state"], s["ready"]) for s in statuses}
    assert running == {"aegis-sidecar": (True, True), "app": (True, True)}, running
    say(shop.kubectl("get", "pods", "-o", "wide"))
    say(f"app pod {pod['metadata']['name']}: {running}")


def test_app_calls_through_the_sidecar(
    cluster: NodeCluster, release: Release, shop: Shop, answered: list[str], say: Say
) -> None:
    results = shop.calls(
        {"text": "hello from the shop"},
        {"text": "write a haiku", "stream": True},
        {"text": PII},
        {
            "text": "draft the incident report",
            "headers": {"X-Aegis-Quality": "critical", "X-Aegis-Complexity": "high"},
        },
        {"text": "summarise these", "headers": {"X-Aegis-Batch-Size": "40"}},
    )
    chat, stream, pii, critical, batch = results
    assert all(r["status"] == 200 for r in results), results
    assert chat["headers"]["x-aegis-provider"] == "local" and chat["text"], chat
    assert stream["headers"]["x-aegis-provider"] == "local", stream
    assert stream["chunks"] > 1 and stream["text"], stream
    assert pii["headers"]["x-aegis-provider"] == "local", pii
    assert pii["headers"]["x-aegis-data-class"] == "pii", pii
    assert critical["headers"]["x-aegis-provider"] == "openai", critical
    assert critical["headers"]["x-aegis-model"] == "gpt-4o", critical
    assert critical["headers"]["x-aegis-rule"] == "critical", critical
    assert batch["headers"]["x-aegis-provider"] == "dashscope", batch
    for name, r in zip(("chat", "stream", "pii", "critical", "batch"), results, strict=True):
        h = r["headers"]
        say(
            f"{name:8} -> {r['status']} provider={h['x-aegis-provider']} "
            f"model={h['x-aegis-model']} rule={h.get('x-aegis-rule')} "
            f"class={h.get('x-aegis-data-class')} cost={h.get('x-aegis-cost-usd', 'stream')}"
        )
    # What each fake saw: the OpenAI fake only the critical request, nobody the e-mail.
    seen = {kind: shop.fake_requests(kind) for kind in ("openai", "dashscope", "ollama")}
    chats = [r for r in seen["openai"] if r["path"].endswith("/chat/completions")]
    assert [r["model"] for r in chats] == ["gpt-4o"], chats
    assert PII not in json.dumps(seen["openai"] + seen["dashscope"])

    ids = answered_ids(results)
    answered.extend(ids)
    wait_in_ledger(release, ids)
    quoted = ",".join(f"'{i}'" for i in ids)
    statuses = release.psql(
        "SELECT request_id || ' ' || status FROM aegis.ledger_entries "
        f"WHERE request_id IN ({quoted})"
    ).split("\n")
    by_id = dict(line.split(" ") for line in statuses)
    assert [by_id[i] for i in ids] == ["ok"] * len(ids), dict(zip(ids, results, strict=True))
    rows = release.psql(
        "SELECT provider, count(*) FROM aegis.ledger_entries "
        f"WHERE namespace = '{NS}' GROUP BY provider ORDER BY provider"
    )
    say(f"ledger rows counted in {POSTGRES_POD} (psql):\n{rows}")

    def spent() -> str | None:
        budget = cluster.kube.kubectl_json("-n", NS, "get", "llmbudget", "openai-monthly")
        value = budget.get("status", {}).get("spentUSD")
        return str(value) if value is not None and Decimal(str(value)) > 0 else None

    spend = wait_until(spent, timeout=60, what="openai-monthly's spend in its status", interval=1)
    say(f"openai-monthly spent {spend}\n$ kubectl get llmroutes,llmbudgets")
    say(platform_view(cluster))


def _resources(traces: Traces, trace_id: bytes) -> list[dict[str, Any]]:
    """The resource attributes of whoever exported spans of `trace_id`."""
    found = []
    for body in list(traces.sink.bodies):
        for resource_spans in ExportTraceServiceRequest.FromString(body).resource_spans:
            spans = [s for scope in resource_spans.scope_spans for s in scope.spans]
            if any(s.trace_id == trace_id for s in spans):
                found.append(attributes_of(resource_spans.resource.attributes))
    return found


def test_one_trace_from_the_app_through_the_sidecar_to_the_provider(
    release: Release, shop: Shop, traces: Traces, answered: list[str], say: Say
) -> None:
    """The app's W3C traceparent (the openai SDK's extra_headers), the sidecar's request
    span as its child with the GenAI and aegis.* attributes, the upstream attempt under
    it, the attempt's context at the provider: one trace, exported through the collector
    the chart's tracing values point at. No prompt or completion text in it."""
    trace_id, app_span = secrets.token_bytes(16), secrets.token_bytes(8)
    traceparent = f"00-{trace_id.hex()}-{app_span.hex()}-01"
    prompt = f"the quarterly plan {secrets.token_hex(6)}"
    reply = f"a plan that reads {secrets.token_hex(6)}"
    critical = {"X-Aegis-Quality": "critical", "X-Aegis-Complexity": "high"}
    shop.set_knobs("openai", {"reply": reply})
    try:
        sent = time.monotonic()
        (result,) = shop.calls(
            {"text": prompt, "headers": {"traceparent": traceparent, **critical}}
        )
    finally:
        shop.set_knobs("openai", {"reply": None})
    assert result["status"] == 200 and reply in result["text"], result
    headers = result["headers"]
    assert headers["x-aegis-provider"] == "openai", headers
    answered.extend(answered_ids([result]))

    def exported() -> list[Span] | None:
        spans = traces.sink.of_trace(trace_id)
        requests = [s for s in spans if s.parent_span_id == app_span]
        if len(requests) != 1:
            return None
        children = [s for s in spans if s.parent_span_id == requests[0].span_id]
        operator = any(service == "aegis-operator" for service, _ in traces.sink.all())
        if not operator or len(children) != attrs(requests[0]).get("aegis.attempts"):
            return None
        return spans

    try:
        spans = wait_until(exported, timeout=60, what="the trace in the collector's export")
    except TimeoutError:
        raise AssertionError(
            f"spans of {trace_id.hex()}: {traces.sink.of_trace(trace_id)}; services seen: "
            f"{sorted({s for s, _ in traces.sink.all()})}; collector log:\n"
            + traces.collector.log_tail(40)
        ) from None
    took = time.monotonic() - sent
    # One trace: the request's span under the app's, every other span under the request.
    (request,) = [s for s in spans if s.parent_span_id == app_span]
    attempts = sorted(
        (s for s in spans if s.parent_span_id == request.span_id),
        key=lambda s: s.start_time_unix_nano,
    )
    assert {s.span_id for s in spans} == {request.span_id} | {s.span_id for s in attempts}
    assert request.kind == Span.SPAN_KIND_SERVER and request.name == "chat auto", request
    got = attrs(request)
    usage = result["usage"]
    assert got["gen_ai.operation.name"] == "chat"
    assert got["gen_ai.provider.name"] == "openai"
    assert got["gen_ai.request.model"] == "auto"
    assert got["gen_ai.response.model"] == headers["x-aegis-model"]
    assert got["gen_ai.usage.input_tokens"] == usage["prompt_tokens"] > 0, (got, usage)
    assert got["gen_ai.usage.output_tokens"] == usage["completion_tokens"] > 0, (got, usage)
    assert got["aegis.route"] == ROUTE
    assert got["aegis.rule"] == headers["x-aegis-rule"] == "critical"
    assert got["aegis.rollout.arm"] == headers["x-aegis-arm"]
    assert got["aegis.data_class"] == headers["x-aegis-data-class"]
    assert got["aegis.budget.decision"] == "within"
    assert got["aegis.cost_usd"] == pytest.approx(float(headers["x-aegis-cost-usd"]))
    assert got["aegis.cost_usd"] > 0
    assert got["http.response.status_code"] == 200
    # The last attempt answered, from the provider the route names, at its Service.
    assert all(s.kind == Span.SPAN_KIND_CLIENT for s in attempts), attempts
    answering = attrs(attempts[-1])
    assert answering["gen_ai.provider.name"] == "openai", answering
    assert answering["gen_ai.response.model"] == headers["x-aegis-model"], answering
    assert answering["server.address"] == f"fake-openai.{NS}.svc.cluster.local", answering
    # Exported by the app pod's sidecar, as the injector named it.
    pod = shop.app_pod()["metadata"]["name"]
    resources = _resources(traces, trace_id)
    assert resources and all(
        r.get("service.name") == "aegis-sidecar"
        and r.get("k8s.pod.name") == pod
        and r.get("k8s.namespace.name") == NS
        for r in resources
    ), resources
    # The provider got the context of the attempt that reached it: the same trace.
    received = [
        r["headers"].get("traceparent")
        for r in shop.fake_requests("openai")
        if trace_id.hex() in r["headers"].get("traceparent", "")
    ]
    assert received == [f"00-{trace_id.hex()}-{attempts[-1].span_id.hex()}-01"], received
    # Names, counts, classes and money only: never the prompt or the completion.
    everything = traces.sink.exported()
    assert prompt.encode() not in everything and reply.encode() not in everything
    assert prompt not in traces.collector.log_tail(500)
    operator = sorted({s.name for service, s in traces.sink.all() if service == "aegis-operator"})
    say(
        f"app traceparent {traceparent} -> {len(spans)} spans of trace {trace_id.hex()} "
        f"in the collector's export {took:.1f}s after the call:\n"
        f"  {request.name} (SERVER, {pod}/aegis-sidecar) {got['gen_ai.provider.name']} "
        f"{got['gen_ai.response.model']} tokens {got['gen_ai.usage.input_tokens']}+"
        f"{got['gen_ai.usage.output_tokens']} cost {got['aegis.cost_usd']}\n"
        + "".join(f"    {s.name} (CLIENT) -> {attrs(s)['server.address']}\n" for s in attempts)
        + f"  fake-openai received traceparent {received[0]}\n"
        f"operator spans exported too: {operator}; no prompt or completion text in "
        f"{len(everything)} exported bytes"
    )


def test_hot_reload_through_the_kubelet_configmap_update(
    shop: Shop, answered: list[str], say: Say
) -> None:
    before = shop.app_pod()
    sidecar_id = before["status"]["initContainerStatuses"][0]["containerID"]
    old_hash = shop.set_critical_model("gpt-4o-mini")
    started = time.monotonic()
    new_hash = shop.wait_sidecar_config(changed_from=old_hash)
    took = time.monotonic() - started
    assert new_hash != old_hash
    (critical,) = shop.calls(
        {"text": "again", "headers": {"X-Aegis-Quality": "critical", "X-Aegis-Complexity": "high"}}
    )
    assert critical["status"] == 200 and critical["headers"]["x-aegis-model"] == "gpt-4o-mini"
    answered.extend(answered_ids([critical]))
    after = shop.app_pod()
    status = after["status"]["initContainerStatuses"][0]
    assert after["metadata"]["uid"] == before["metadata"]["uid"]
    assert status["containerID"] == sidecar_id and status["restartCount"] == 0, status
    say(
        f"LLMRoute patched: config {old_hash[:12]} -> {new_hash[:12]} in the running sidecar "
        f"after {took:.1f}s (kubelet ConfigMap volume update), same container, 0 restarts"
    )


def _arm_of(results: list[dict[str, Any]]) -> dict[str, int]:
    arms: dict[str, int] = {}
    for r in results:
        arm = f"{r['headers'].get('x-aegis-arm')}:{r['headers'].get('x-aegis-provider')}"
        arms[arm] = arms.get(arm, 0) + 1
    return arms


def test_rollout_shifts_traffic_and_rolls_back_a_failing_candidate(
    cluster: NodeCluster, release: Release, shop: Shop, answered: list[str], say: Say
) -> None:
    rollout = {
        "candidate": {"default": {"provider": "dashscope"}, "fallback": []},
        "steps": [50, 100],
        "interval": "5s",
        "paused": True,
        "stickiness": {"header": "X-Aegis-User"},
        "analysis": {"maxErrorRate": 0.05, "minRequests": 5, "maxP95LatencyMs": 5000},
    }
    shop.kubectl(
        "patch", "llmroute", ROUTE, "--type=merge", "-p", json.dumps({"spec": {"rollout": rollout}})
    )

    def at_weight() -> dict[str, Any] | None:
        state = shop.route().get("status", {}).get("rollout") or {}
        return state if state.get("weight") == 50 else None

    wait_until(at_weight, timeout=60, what="rollout at 50 %", interval=1)
    shop.wait_sidecar_config()
    users = [{"text": f"question {i}", "headers": {"X-Aegis-User": f"user-{i}"}} for i in range(16)]
    healthy = shop.calls(*users)
    assert all(r["status"] == 200 for r in healthy), healthy
    arms = _arm_of(healthy)
    assert set(arms) == {"stable:local", "candidate:dashscope"}, arms
    answered.extend(answered_ids(healthy))
    say(f"step 50 %: {arms}\n{platform_view(cluster)}")

    # The candidate breaks. Resuming starts the step afresh (a new stepStartedAt), so
    # the requests after it are what the analysis reads from the Postgres ledger.
    shop.set_knobs("dashscope", {"error_rate": 1.0, "error_status": 500})
    shop.kubectl(
        "patch", "llmroute", ROUTE, "--type=merge", "-p", '{"spec":{"rollout":{"paused":false}}}'
    )
    failing = shop.calls(*users)
    assert any(r["status"] >= 500 for r in failing), failing
    answered.extend(answered_ids(failing))

    def rolled_back() -> dict[str, Any] | None:
        state = shop.route().get("status", {}).get("rollout") or {}
        return state if state.get("phase") == "RolledBack" else None

    state = wait_until(rolled_back, timeout=90, what="the rollout to roll back", interval=1)
    assert state["weight"] == 0, state
    shop.wait_sidecar_config()
    after = shop.calls(*users)
    assert all(r["status"] == 200 for r in after), after
    assert _arm_of(after) == {"stable:local": len(users)}, _arm_of(after)
    answered.extend(answered_ids(after))
    errors = release.psql(
        "SELECT arm, status, count(*) FROM aegis.ledger_entries "
        f"WHERE namespace = '{NS}' AND route = '{ROUTE}' GROUP BY arm, status ORDER BY 1, 2"
    )
    events = shop.kubectl(
        "get", "events", f"--field-selector=involvedObject.name={ROUTE}", "-o", "name"
    )
    say(
        f"with the candidate failing: {_arm_of(failing)}; rollout {state}\n"
        f"ledger by arm and status:\n{errors}\nafter rollback: {_arm_of(after)}\n"
        f"{platform_view(cluster)}\n{len(events.splitlines())} events on the route"
    )
    shop.set_knobs("dashscope", {"error_rate": 0.0})
    shop.kubectl(
        "patch", "llmroute", ROUTE, "--type=json", "-p", '[{"op":"remove","path":"/spec/rollout"}]'
    )
    shop.wait_sidecar_config()


def test_metrics_scraped_through_the_pod_network(
    cluster: NodeCluster, release: Release, shop: Shop, say: Say
) -> None:
    scraper = pod("scraper", shop.client_image, ["sleep", "infinity"], restart="Never")
    cluster.kube.apply(scraper, NS)
    shop.kubectl("wait", "pod/scraper", "--for=condition=Ready", "--timeout=120s", timeout=150)
    app_ip = shop.app_pod()["status"]["podIP"]
    (operator,) = release.pods("operator")
    targets = {
        "sidecar": f"http://{app_ip}:9787/metrics",
        "operator": f"http://{operator['status']['podIP']}:9090/metrics",
    }
    for name, url in targets.items():
        scraped = shop.fetch(url, pod="scraper", container="main")
        assert scraped["status"] == 200, scraped
        text = scraped["body"]
        checked = subprocess.run(
            ["promtool", "check", "metrics"],
            input=text,
            capture_output=True,
            text=True,
            check=False,
        )
        assert checked.returncode == 0, (name, checked.stdout, checked.stderr)
        series = [line for line in text.splitlines() if line and not line.startswith("#")]
        wanted = "aegis_requests_total" if name == "sidecar" else "aegis_budget"
        assert any(line.startswith(wanted) for line in series), (name, text[:2000])
        say(f"{name} {url}: {len(series)} series, promtool check metrics: ok")
    shop.kubectl("delete", "pod", "scraper", "--wait=false")
