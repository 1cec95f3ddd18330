"""The admission decision as a pure function: opt-in, route choice, patch, idempotency."""

from __future__ import annotations

from typing import Any

import pytest

from aegis.operator.api.naming import (
    CONFIG_HASH_ANNOTATION,
    CONFIG_MOUNT_PATH,
    INJECTED_ANNOTATION,
    LEDGER_DSN_ENV,
    ROUTE_ANNOTATION,
)
from aegis.operator.injector.admission import AdmissionDecision, PodRequest, Via, decide
from aegis.operator.injector.patch import CONFIG_VOLUME, DATA_VOLUME, PLACEHOLDER_API_KEY
from aegis.operator.injector.route_choice import RouteInfo, route_info
from aegis.operator.injector.settings import SidecarSettings
from tests.injector.helpers import SIDECAR, apply, env_of, pod, route

NS = "team"
RAG = route("rag", selector={"matchLabels": {"app": "rag-api"}})


def run(
    obj: dict[str, Any],
    routes: list[RouteInfo] | None = None,
    *,
    via: Via = "pod",
    native: bool = True,
    settings: SidecarSettings = SIDECAR,
    namespace: str = NS,
    operation: str = "CREATE",
) -> AdmissionDecision:
    request = PodRequest(namespace, operation, "Pod", "", obj)
    return decide(
        request,
        via,
        [RAG] if routes is None else routes,
        settings,
        native=native,
        version="9.9.9",
        never_injected=frozenset({"kube-system", "aegis-system"}),
    )


def opted_in(**kwargs: Any) -> dict[str, Any]:
    labels = {"app": "rag-api", "aegis.io/inject": "true"}
    return pod(labels=labels, **kwargs)


def test_labelled_pod_gets_native_sidecar_volumes_env_and_annotations() -> None:
    decision = run(opted_in())
    assert (decision.outcome, decision.reason, decision.route) == ("injected", "injected", "rag")
    result = apply(opted_in(), decision.patch)

    annotations = result["metadata"]["annotations"]
    assert annotations[INJECTED_ANNOTATION] == "aegis-injector/9.9.9"
    assert annotations[CONFIG_HASH_ANNOTATION] == "abc123"
    assert annotations[ROUTE_ANNOTATION] == "rag"

    [sidecar] = result["spec"]["initContainers"]
    assert sidecar["name"] == "aegis-sidecar"
    assert sidecar["restartPolicy"] == "Always"
    assert sidecar["image"] == "registry.invalid/aegis:test"
    assert sidecar["command"] == ["aegis"]
    assert sidecar["args"][:3] == ["sidecar", "--config", CONFIG_MOUNT_PATH]
    # a named metrics port for a PodMonitor; by default it listens on loopback as the API does
    assert sidecar["args"][-2:] == ["--metrics-host", "127.0.0.1"]  # the pod only, by default
    assert sidecar["ports"] == [{"name": "aegis-metrics", "containerPort": 9787, "protocol": "TCP"}]
    env = env_of(sidecar)
    assert env["AEGIS_KEY_OPENAI"] == {"secretKeyRef": {"name": "openai", "key": "apiKey"}}
    assert env[LEDGER_DSN_ENV] == {"secretKeyRef": {"name": "aegis-ledger", "key": "dsn"}}
    assert env["POD_NAME"] == {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}}
    assert all("value" not in e for e in sidecar["env"] if e["name"].startswith("AEGIS_KEY"))
    security = sidecar["securityContext"]
    assert security["runAsNonRoot"] and security["readOnlyRootFilesystem"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert sidecar[probe]["exec"]["command"][:2] == ["aegis", "probe"]
    mounts = {m["name"]: m for m in sidecar["volumeMounts"]}
    assert mounts[CONFIG_VOLUME] == {
        "name": CONFIG_VOLUME,
        "mountPath": CONFIG_MOUNT_PATH,
        "readOnly": True,
    }  # a directory, never subPath: ConfigMap updates reach the running sidecar
    assert all("subPath" not in m for m in sidecar["volumeMounts"])

    volumes = {v["name"]: v for v in result["spec"]["volumes"]}
    assert volumes[CONFIG_VOLUME]["configMap"]["name"] == "aegis-route-rag"
    assert "emptyDir" in volumes[DATA_VOLUME]

    [app] = result["spec"]["containers"]
    assert env_of(app) == {
        "OPENAI_BASE_URL": "http://127.0.0.1:8787/v1",
        "AEGIS_URL": "http://127.0.0.1:8787",
        "OPENAI_API_KEY": PLACEHOLDER_API_KEY,  # SDKs need one; the sidecar holds the real keys
        "ANTHROPIC_BASE_URL": "http://127.0.0.1:8787",  # the Anthropic SDK adds /v1 itself
        "ANTHROPIC_API_KEY": PLACEHOLDER_API_KEY,
    }


def test_regular_container_on_old_api_servers() -> None:
    decision = run(opted_in(), native=False)
    result = apply(opted_in(), decision.patch)
    assert "initContainers" not in result["spec"]
    names = [c["name"] for c in result["spec"]["containers"]]
    assert names == ["app", "aegis-sidecar"]
    assert "restartPolicy" not in result["spec"]["containers"][1]
    # kubectl logs/exec keep defaulting to the app container
    assert result["metadata"]["annotations"]["kubectl.kubernetes.io/default-container"] == "app"


def test_native_sidecar_goes_before_existing_init_containers() -> None:
    obj = opted_in(initContainers=[{"name": "migrate", "image": "registry.invalid/m:1"}])
    result = apply(obj, run(obj).patch)
    assert [c["name"] for c in result["spec"]["initContainers"]] == ["aegis-sidecar", "migrate"]


def test_existing_user_values_are_kept_and_lists_appended() -> None:
    containers = [
        {
            "name": "app",
            "image": "registry.invalid/app:1",
            "env": [{"name": "OPENAI_BASE_URL", "value": "https://mine.example/v1"}],
        },
        {"name": "worker", "image": "registry.invalid/w:1", "env": [{"name": "X", "value": "1"}]},
    ]
    obj = opted_in(
        containers=containers,
        annotations={"team": "search"},
        volumes=[{"name": "scratch", "emptyDir": {}}],
    )
    result = apply(obj, run(obj).patch)
    app, worker = result["spec"]["containers"]
    assert env_of(app) == {
        "OPENAI_BASE_URL": "https://mine.example/v1",  # the user's value wins
        "AEGIS_URL": "http://127.0.0.1:8787",
        "OPENAI_API_KEY": PLACEHOLDER_API_KEY,
        "ANTHROPIC_BASE_URL": "http://127.0.0.1:8787",
        "ANTHROPIC_API_KEY": PLACEHOLDER_API_KEY,
    }
    assert list(env_of(worker)) == [
        "X",
        "OPENAI_BASE_URL",
        "AEGIS_URL",
        "OPENAI_API_KEY",
        "ANTHROPIC_BASE_URL",
        "ANTHROPIC_API_KEY",
    ]
    assert result["metadata"]["annotations"]["team"] == "search"
    assert [v["name"] for v in result["spec"]["volumes"]] == ["scratch", CONFIG_VOLUME, DATA_VOLUME]


def test_reinvocation_and_already_injected_pods_change_nothing() -> None:
    obj = opted_in()
    injected = apply(obj, run(obj).patch)
    again = run(injected)
    assert (again.outcome, again.reason, again.patch) == ("skipped", "already-injected", [])
    assert run(injected, via="namespace").patch == []


@pytest.mark.parametrize(
    ("labels", "via", "reason"),
    [
        ({"app": "rag-api"}, "pod", "not-opted-in"),
        ({"app": "rag-api", "aegis.io/inject": "false"}, "pod", "opt-out"),
        ({"app": "rag-api", "aegis.io/inject": "false"}, "namespace", "opt-out"),
    ],
)
def test_pods_that_did_not_opt_in_are_skipped(
    labels: dict[str, str], via: Via, reason: str
) -> None:
    decision = run(pod(labels=labels), via=via)
    assert (decision.outcome, decision.reason, decision.patch) == ("skipped", reason, [])


def test_namespace_opt_in_injects_unlabelled_pods() -> None:
    decision = run(pod(labels={"app": "rag-api"}), via="namespace")
    assert decision.outcome == "injected"


@pytest.mark.parametrize("namespace", ["kube-system", "aegis-system"])
def test_protected_namespaces_are_never_injected(namespace: str) -> None:
    decision = run(opted_in(), namespace=namespace)
    assert (decision.outcome, decision.reason) == ("skipped", "protected-namespace")


def test_only_pod_create_is_mutated() -> None:
    assert run(opted_in(), operation="UPDATE").reason == "not-pod-create"


def test_no_matching_route_is_refused_naming_no_route() -> None:
    other = route("chat", selector={"matchLabels": {"app": "chat"}})
    decision = run(opted_in(), [other])
    assert (decision.outcome, decision.reason) == ("refused", "no-route")
    assert "no LLMRoute in namespace team selects it" in decision.message
    assert "chat" not in decision.message and "app=chat" not in decision.message
    assert "aegis.io/inject=true" in decision.message  # the pod's labels are shown
    assert run(opted_in(), []).message.endswith("or set annotation aegis.io/route")


def test_several_matching_routes_are_refused_naming_none() -> None:
    wide = route("all-pods", selector={})
    decision = run(opted_in(), [RAG, wide])
    assert (decision.outcome, decision.reason) == ("refused", "multiple-routes")
    assert "selected by 2 LLMRoutes" in decision.message
    assert "all-pods" not in decision.message and "rag" not in decision.message.split(":")[0]
    assert "podSelector app=" not in decision.message


def test_annotation_picks_the_route_and_wins_over_selectors() -> None:
    wide = route("all-pods", selector={})
    obj = opted_in(annotations={ROUTE_ANNOTATION: "all-pods"})
    decision = run(obj, [RAG, wide])
    assert (decision.outcome, decision.route) == ("injected", "all-pods")
    unknown = run(opted_in(annotations={ROUTE_ANNOTATION: "nope"}), [RAG])
    assert (unknown.outcome, unknown.reason) == ("refused", "unknown-route")
    assert "'nope'" in unknown.message and "rag" not in unknown.message


def test_route_without_selector_is_only_used_by_annotation() -> None:
    manual = route("manual", selector=None)
    assert run(opted_in(), [manual]).reason == "no-route"
    chosen = run(opted_in(annotations={ROUTE_ANNOTATION: "manual"}), [manual])
    assert chosen.route == "manual"


def test_cache_not_synced_refuses_opted_in_pods_only() -> None:
    request = PodRequest(NS, "CREATE", "Pod", "", opted_in())
    decision = decide(
        request, "pod", None, SIDECAR, native=True, version="1", never_injected=frozenset()
    )
    assert (decision.outcome, decision.reason) == ("refused", "not-ready")
    skipped = PodRequest(NS, "CREATE", "Pod", "", pod(labels={"aegis.io/inject": "false"}))
    assert (
        decide(
            skipped, "pod", None, SIDECAR, native=True, version="1", never_injected=frozenset()
        ).outcome
        == "skipped"
    )


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"containers": [{"name": "aegis-sidecar", "image": "x"}]}, "named aegis-sidecar"),
        ({"volumes": [{"name": "aegis-config", "emptyDir": {}}]}, "volume aegis-config"),
        (
            {"containers": [{"name": "app", "image": "x", "ports": [{"containerPort": 8787}]}]},
            "uses port 8787",
        ),
        ({"hostNetwork": True}, "hostNetwork"),
    ],
)
def test_conflicts_are_refused_with_a_message(change: dict[str, Any], fragment: str) -> None:
    obj = opted_in()
    obj["spec"].update(change)
    decision = run(obj)
    assert (decision.outcome, decision.reason) == ("refused", "conflict")
    assert fragment in decision.message


def test_pending_config_hash_and_no_ledger_secret() -> None:
    settings = SidecarSettings(image="i", ledger_secret_name=None, port=18787)
    decision = run(opted_in(), [route("rag", selector={}, config_hash=None)], settings=settings)
    result = apply(opted_in(), decision.patch)
    assert result["metadata"]["annotations"][CONFIG_HASH_ANNOTATION] == "pending"
    sidecar = result["spec"]["initContainers"][0]
    assert LEDGER_DSN_ENV not in env_of(sidecar)
    assert "--port" in sidecar["args"] and "18787" in sidecar["args"]
    assert env_of(result["spec"]["containers"][0])["OPENAI_BASE_URL"] == "http://127.0.0.1:18787/v1"


def test_route_info_from_an_llmroute_object() -> None:
    obj: dict[str, Any] = {
        "apiVersion": "aegis.io/v1alpha1",
        "kind": "LLMRoute",
        "metadata": {"name": "rag-api", "namespace": NS},
        "spec": {
            "podSelector": {"matchLabels": {"app": "rag-api"}},
            "providers": [
                {"name": "local", "type": "ollama"},
                {
                    "name": "dash-scope",
                    "type": "dashscope",
                    "apiKeySecretRef": {"name": "d", "key": "k"},
                },
            ],
        },
        "status": {"configHash": "f00d"},
    }
    info = route_info(obj)
    assert info is not None
    assert info.keys[0].env == "AEGIS_KEY_DASH_SCOPE"
    assert (info.keys[0].secret_name, info.keys[0].secret_key) == ("d", "k")
    assert info.config_hash == "f00d"
    obj["metadata"]["deletionTimestamp"] = "2025-01-01T00:00:00Z"
    assert route_info(obj) is None  # a route being deleted selects nothing


def test_static_pods_are_skipped() -> None:
    mirror = opted_in(annotations={"kubernetes.io/config.mirror": "abc"})
    assert (run(mirror).outcome, run(mirror).reason) == ("skipped", "static-pod")


def test_spool_env_name_matches_the_sidecar() -> None:
    from aegis.operator.api.naming import SPOOL_DIR_ENV
    from aegis.sidecar.runtime.wiring import SPOOL_ENV

    assert SPOOL_DIR_ENV == SPOOL_ENV
