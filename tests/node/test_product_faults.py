"""The whole product end to end on the real node: the faults, after the scenarios of
``test_product.py`` and against the same release and shop (the package's fixtures),
in file order: the operator's pod deleted, the injector at zero, PostgreSQL out and
crashed, a helm upgrade under traffic, and last the uninstall. Every answer the app
got in either file (``answered``) must be in the ledger.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.controlplane.procs import wait_until
from tests.node.conftest import NodeCluster, Say
from tests.node.product import NS, ROUTE, Shop
from tests.node.product_checks import (
    answered_ids,
    metric_sum,
    platform_view,
    wait_in_ledger,
)
from tests.node.release import CHART, POSTGRES_POD, Release
from tests.node.workloads import pod

pytestmark = [
    pytest.mark.node,
    pytest.mark.slow,
    pytest.mark.timeout(600),
    pytest.mark.usefixtures("timed"),
]


def test_operator_pod_deleted_reconcile_resumes(
    cluster: NodeCluster, release: Release, shop: Shop, say: Say
) -> None:
    (old,) = release.pods("operator")
    release.kubectl("delete", "pod", old["metadata"]["name"], "--wait=false")

    def replaced() -> dict[str, Any] | None:
        pods = [
            p for p in release.pods("operator") if p["metadata"]["uid"] != old["metadata"]["uid"]
        ]
        ready = [
            p
            for p in pods
            if p["status"].get("containerStatuses") and p["status"]["containerStatuses"][0]["ready"]
        ]
        return ready[0] if ready else None

    new = wait_until(replaced, timeout=120, what="a new operator pod", interval=1)
    model = (
        "gpt-4o-mini" if shop.route()["spec"]["rules"][1]["to"]["model"] == "gpt-4o" else "gpt-4o"
    )
    old_hash = shop.set_critical_model(model)
    new_hash = shop.wait_sidecar_config(changed_from=old_hash)
    assert new_hash != old_hash
    say(
        f"operator pod {old['metadata']['name']} deleted -> {new['metadata']['name']} Ready; "
        f"a route change after it reached the sidecar ({old_hash[:12]} -> {new_hash[:12]})"
    )


def test_injector_at_zero_refuses_opted_in_pods_only(
    cluster: NodeCluster, release: Release, shop: Shop, say: Say
) -> None:
    kube = cluster.kube
    release.kubectl("scale", "deployment/aegis-injector", "--replicas=0")
    try:
        wait_until(lambda: not release.pods("injector"), timeout=120, what="no injector pod")
        opted = pod(
            "opted-in",
            shop.client_image,
            ["sleep", "infinity"],
            labels={"app": "opted-in", "aegis.io/inject": "true"},
            annotations={"aegis.io/route": ROUTE},
        )
        refused = kube.kubectl("-n", NS, "apply", "-f", "-", input=json.dumps(opted), check=False)
        assert refused.returncode != 0, refused.stdout
        assert "inject.aegis.io" in refused.stderr, refused.stderr
        plain = pod("plain", shop.client_image, ["sleep", "infinity"], labels={"app": "plain"})
        kube.apply(plain, NS)
        shop.kubectl("wait", "pod/plain", "--for=condition=Ready", "--timeout=120s", timeout=150)
        say(f"injector at 0: opted-in pod refused:\n{refused.stderr.strip()}\nplain pod Ready")
    finally:
        release.kubectl("scale", "deployment/aegis-injector", "--replicas=2")
        release.kubectl(
            "rollout", "status", "deployment/aegis-injector", "--timeout=180s", timeout=200
        )
        shop.kubectl("delete", "pod", "plain", "--ignore-not-found", "--wait=false")

    # Back at two replicas, the same pod is admitted with its sidecar, once the
    # Service routes to them: Ready pods reach kube-proxy's rules a moment later, and
    # until then the API server's call is refused (only that is waited out).
    def admitted_once_routed() -> bool:
        done = kube.kubectl("-n", NS, "apply", "-f", "-", input=json.dumps(opted), check=False)
        if done.returncode == 0:
            return True
        assert "connect: connection refused" in done.stderr, done.stderr
        return False

    wait_until(admitted_once_routed, timeout=60, what="the injector's Service to route")
    admitted = kube.kubectl_json("-n", NS, "get", "pod", "opted-in")
    init = [c["name"] for c in admitted["spec"].get("initContainers", [])]
    assert init == ["aegis-sidecar"], init
    shop.kubectl("delete", "pod", "opted-in", "--wait=false")
    say("injector back at 2 replicas: the opted-in pod is admitted with its sidecar")


def test_postgres_outage_fails_paid_closed_and_replays_the_spool(
    release: Release, shop: Shop, answered: list[str], say: Say
) -> None:
    critical = {"X-Aegis-Quality": "critical", "X-Aegis-Complexity": "high"}
    openai_before = len(shop.fake_requests("openai"))
    release.kubectl("scale", "statefulset/aegis-postgresql", "--replicas=0")
    try:
        wait_until(lambda: not release.pods("postgresql"), timeout=120, what="Postgres gone")
        local = shop.calls(*({"text": f"while the ledger is down {i}"} for i in range(5)))
        assert all(
            r["status"] == 200 and r["headers"]["x-aegis-provider"] == "local" for r in local
        )
        answered.extend(answered_ids(local))

        def blocked() -> bool:
            metrics = shop.sidecar_metrics()
            return any(
                line.startswith("aegis_budget_available") and line.endswith(" 0.0")
                for line in metrics.splitlines()
            )

        wait_until(blocked, timeout=60, what="the sidecar's budgets to block", interval=1)
        paid, batch = shop.calls(
            {"text": "an expensive question", "headers": critical},
            {"text": "a batch for DashScope", "headers": {"X-Aegis-Batch-Size": "40"}},
        )
        # OpenAI's budget says Reject: refused. DashScope's says FallbackLocal: local.
        assert paid["status"] == 503, paid
        assert paid["error"]["code"] == "budget_unavailable", paid  # the SDK's error body
        assert len(shop.fake_requests("openai")) == openai_before, "a paid call left"
        assert batch["status"] == 200, batch
        assert batch["headers"]["x-aegis-provider"] == "local", batch
        assert batch["headers"]["x-aegis-fallback"] == "dashscope:budget_unavailable", batch
        answered.extend(answered_ids([batch]))
        pending = shop.readyz()["ledger"]["pendingRows"]
        say(
            f"Postgres at 0 replicas: 5 local answers; OpenAI (Reject) -> 503 "
            f"budget_unavailable; a DashScope batch (FallbackLocal) -> local with "
            f"X-Aegis-Fallback {batch['headers']['x-aegis-fallback']}; "
            f"{pending} rows waiting in the spool"
        )
    finally:
        release.kubectl("scale", "statefulset/aegis-postgresql", "--replicas=1")
        release.kubectl(
            "rollout", "status", "statefulset/aegis-postgresql", "--timeout=180s", timeout=200
        )
    wait_in_ledger(release, answered, timeout=120)

    def paid_again() -> dict[str, Any] | None:
        (r,) = shop.calls({"text": "an expensive question", "headers": critical})
        return r if r["status"] == 200 else None

    back = wait_until(paid_again, timeout=60, what="paid traffic again", interval=2)
    answered.extend(answered_ids([back]))
    say(
        f"Postgres back: every one of {len(answered)} answered requests is in the ledger; "
        f"paid traffic answered again by {back['headers']['x-aegis-provider']}"
    )


def test_postgres_crash_loses_no_row(
    release: Release, shop: Shop, answered: list[str], say: Say
) -> None:
    """An immediate shutdown (a crash: no checkpoint, WAL recovery on start) under
    traffic; the kubelet restarts the container and every answer reaches the ledger."""
    (before,) = release.pods("postgresql")
    restarts = before["status"]["containerStatuses"][0]["restartCount"]
    errors_before = metric_sum(shop.sidecar_metrics(), "aegis_ledger_write_errors_total")
    loop = shop.loop({"text": "through a database crash"}, every=0.1)
    try:
        release.kubectl(
            "exec", POSTGRES_POD, "-c", "postgresql", "--",
            "pg_ctl", "stop", "--mode=immediate", "--no-wait",
            check=False,
        )  # fmt: skip

        def restarted() -> bool:
            pods = release.pods("postgresql")
            status = pods[0]["status"].get("containerStatuses", [{}])[0] if pods else {}
            return bool(status.get("restartCount", 0) > restarts and status.get("ready"))

        wait_until(restarted, timeout=120, what="PostgreSQL restarted by the kubelet", interval=1)
    finally:
        stdout, stderr = loop.communicate(input="", timeout=120)
    results = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    assert results, (stdout, stderr)
    assert all(r["status"] == 200 for r in results), [r for r in results if r["status"] != 200]
    answered.extend(answered_ids(results))
    wait_in_ledger(release, answered, timeout=120)
    recovered = release.kubectl("logs", POSTGRES_POD, "-c", "postgresql", check=False)
    assert "database system was interrupted" in recovered or "redo" in recovered, recovered[-2000:]
    errors = metric_sum(shop.sidecar_metrics(), "aegis_ledger_write_errors_total") - errors_before
    say(
        f"pg_ctl stop --mode=immediate under traffic: {len(results)} requests, all 200; the "
        f"kubelet restarted PostgreSQL (WAL recovery); {errors:.0f} failed ledger writes "
        f"meanwhile, yet all {len(answered)} answered requests are in the ledger"
    )


def test_helm_upgrade_keeps_traffic(
    cluster: NodeCluster, release: Release, shop: Shop, answered: list[str], say: Say
) -> None:
    database = release.pods("postgresql")[0]["metadata"]["uid"]
    loop = shop.loop({"text": "during the upgrade"})
    try:
        out = release.helm(
            "upgrade",
            release.name,
            str(CHART),
            "--reuse-values",
            "--set",
            "operator.logLevel=DEBUG",
            "--wait",
            "--timeout=6m",
        )
    finally:
        stdout, stderr = loop.communicate(input="", timeout=120)
    results = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    assert len(results) >= 5, (stdout, stderr)
    failed = [r for r in results if r["status"] != 200]
    assert not failed, failed
    answered.extend(answered_ids(results))
    env = release.kubectl("get", "deployment/aegis-operator", "-o", "json")
    container = json.loads(env)["spec"]["template"]["spec"]["containers"][0]
    levels = [e.get("value") for e in container["env"] if e["name"] == "AEGIS_LOG_LEVEL"]
    assert levels == ["DEBUG"], levels
    assert release.pods("postgresql")[0]["metadata"]["uid"] == database
    wait_in_ledger(release, answered, timeout=60)
    say(f"after every scenario, as the platform team sees it:\n{platform_view(cluster)}")
    say(
        f"helm upgrade (operator.logLevel=DEBUG):\n{out}\n{len(results)} requests during it, "
        f"all 200; PostgreSQL pod kept; ledger still takes rows"
    )


#: What `helm uninstall` leaves in the release namespace, as docs/install.md says: the
#: injector's TLS Secret (the injector wrote it, not helm) and the in-chart PostgreSQL's
#: claim (the ledger itself); the rest is the namespace's own.
_RELEASE_NS_LEFT = {
    "secret/aegis-injector-tls",
    "persistentvolumeclaim/data-aegis-postgresql-0",
    "serviceaccount/default",
    "configmap/kube-root-ca.crt",
}
#: In an app namespace: what the operator rendered from the CRs that stay.
_APP_NS_LEFT = {f"configmap/aegis-route-{ROUTE}", "secret/aegis-ledger"}
_NAMESPACED = (
    "all,secrets,configmaps,serviceaccounts,roles,rolebindings,persistentvolumeclaims,"
    "poddisruptionbudgets,networkpolicies,podmonitors"
)
_CLUSTER = (
    "clusterroles,clusterrolebindings,mutatingwebhookconfigurations,"
    "validatingwebhookconfigurations,validatingadmissionpolicies,"
    "validatingadmissionpolicybindings,customresourcedefinitions"
)


def test_helm_uninstall_leaves_no_aegis_object(
    cluster: NodeCluster, release: Release, shop: Shop, say: Say
) -> None:
    kube = cluster.kube
    release.helm("uninstall", release.name, "--wait")

    def names(*args: str) -> set[str]:
        out = kube.kubectl("get", *args, "-o", "name").stdout.split()
        return {n.replace(".apps/", "/").replace(".batch/", "/") for n in out}

    def release_ns_settled() -> set[str] | None:
        left = names(_NAMESPACED, "-n", release.namespace)
        return left if left <= _RELEASE_NS_LEFT else None

    try:
        left = wait_until(release_ns_settled, timeout=120, what="the release's objects gone")
    except TimeoutError:
        raise AssertionError(names(_NAMESPACED, "-n", release.namespace)) from None
    aegis_cluster = {n for n in names(_CLUSTER) if "aegis" in n}
    # The chart's CRDs stay (the custom resources in them are the users'), nothing else.
    crds = {
        f"customresourcedefinition.apiextensions.k8s.io/{path.name.removesuffix('.yaml')}"
        for path in (CHART / "files" / "crds").glob("*.aegis.io.yaml")
    }
    assert len(crds) >= 3 and aegis_cluster == crds, (aegis_cluster, crds)
    operator_made = names(
        _NAMESPACED, "-n", NS, "-l", "app.kubernetes.io/managed-by=aegis-operator"
    )
    assert operator_made <= _APP_NS_LEFT, operator_made
    shop_left = names(_NAMESPACED, "-n", NS)
    assert not [n for n in shop_left if "aegis" in n and n not in _APP_NS_LEFT], shop_left
    routes = kube.kubectl("-n", NS, "get", "llmroutes,llmbudgets", "-o", "name").stdout.split()
    assert len(routes) == 3, routes
    say(
        f"after helm uninstall: {release.namespace} holds {sorted(left)}; cluster-wide only "
        f"{sorted(aegis_cluster)} (kept); {NS} keeps {sorted(operator_made)} and its "
        f"{len(routes)} custom resources, as docs/install.md says"
    )
