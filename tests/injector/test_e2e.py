"""End to end: operator renders a route, the injector injects a pod, its sidecar routes a call.

Everything real except the kubelet (the test bed has none): the operator and the
injector run as processes against the real kube-apiserver; the test reads the
injected Pod and the rendered ConfigMap back from the API server and starts the
sidecar container's own command and args, with the Pod's env resolved the way the
kubelet would (``secretKeyRef`` from the Secrets, downward API fields) and the
ConfigMap's files where the volume would be mounted. An ``openai`` client then uses
the app container's ``OPENAI_BASE_URL``; the call is routed per the route to fake
upstreams and lands in the PostgreSQL ledger.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import openai
import pytest

from aegis.operator.api.naming import (
    CONFIG_HASH_ANNOTATION,
    CONFIG_KEY,
    INJECT_LABEL,
    configmap_name,
)
from aegis.operator.injector.patch import CONFIG_VOLUME, DATA_VOLUME
from aegis.sidecar.fakes import FakeUpstream
from tests.controlplane.kube import Kube
from tests.controlplane.procs import ServerProcess, start_on_free_ports, wait_until
from tests.injector.conftest import AEGIS, Injector
from tests.injector.helpers import env_of
from tests.sidecar.tenancy import tenant_url

pytestmark = [pytest.mark.kube, pytest.mark.postgres, pytest.mark.slow]

OPENAI_KEY = "sk-e2e-from-secret"


@pytest.fixture
def operator(kube: Kube, crds: None, namespace: str, tmp_path: Path) -> Iterator[ServerProcess]:
    """``aegis operator`` watching the test namespace (the real process, admin credentials)."""

    def launch(ports: list[int]) -> ServerProcess:
        health, metrics = ports
        process = ServerProcess(
            "aegis-operator",
            [
                AEGIS, "operator", "--namespace", namespace,
                "--health-host", "127.0.0.1", "--health-port", str(health),
                "--metrics-host", "127.0.0.1", "--metrics-port", str(metrics),
            ],
            tmp_path / "operator.log",
            env={**kube.env, "AEGIS_LOG_FORMAT": "text"},
        )  # fmt: skip
        process.start()
        return process

    def healthy(ports: list[int]) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{ports[0]}/healthz", timeout=2) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    process, _ = start_on_free_ports(launch, 2, healthy, timeout=60, what="the operator's health")
    try:
        yield process
        # Through the running operator, so its finalizer is handled and nothing is left.
        kube.kubectl("delete", "llmroutes", "--all", "-n", namespace, "--timeout=30s")
    finally:
        process.stop()


@pytest.fixture
async def upstreams() -> AsyncIterator[tuple[FakeUpstream, FakeUpstream]]:
    async with (
        FakeUpstream.start("openai", api_key=OPENAI_KEY) as cloud,
        FakeUpstream.start("ollama") as local,
    ):
        yield cloud, local


def route(cloud: FakeUpstream, local: FakeUpstream) -> dict[str, Any]:
    return {
        "apiVersion": "aegis.io/v1alpha1",
        "kind": "LLMRoute",
        "metadata": {"name": "rag-api"},
        "spec": {
            "podSelector": {"matchLabels": {"app": "rag-api"}},
            "providers": [
                {
                    "name": "local",
                    "type": "ollama",
                    "locality": "local",
                    "baseURL": local.base_url,
                    "models": {"default": "gemma3:4b"},
                },
                {
                    "name": "openai",
                    "type": "openai",
                    "locality": "cloud",
                    "baseURL": cloud.base_url,
                    "apiKeySecretRef": {"name": "openai", "key": "apiKey"},
                    "models": {"default": "gpt-4o-mini"},
                },
            ],
            "rules": [
                {
                    "name": "critical",
                    "match": {"quality": ["critical"], "complexity": ["high"]},
                    "to": {"provider": "openai", "model": "gpt-4o"},
                }
            ],
            "default": {"provider": "local"},
        },
    }


def resolve_env(kube: Kube, pod: dict[str, Any], container: dict[str, Any]) -> dict[str, str]:
    """The container's environment as the kubelet would build it."""
    namespace = pod["metadata"]["namespace"]
    env: dict[str, str] = {}
    for item in container.get("env") or []:
        if "value" in item:
            env[item["name"]] = item["value"]
            continue
        source = item["valueFrom"]
        if "fieldRef" in source:
            path = source["fieldRef"]["fieldPath"]
            assert path in (
                "metadata.name",
                "metadata.namespace",
                "spec.serviceAccountName",
            ), path
            top, field = path.split(".", 1)
            env[item["name"]] = pod[top].get(field, "default" if top == "spec" else None)
        else:
            ref = source["secretKeyRef"]
            secret = kube.kubectl_json("get", "secret", ref["name"], "-n", namespace)
            env[item["name"]] = base64.b64decode(secret["data"][ref["key"]]).decode()
    return env


def local_argv(container: dict[str, Any], mounts: dict[str, Path]) -> list[str]:
    """command + args with the image's ``aegis`` and volume paths mapped to this machine."""
    argv = [*container["command"], *container["args"]]
    assert argv[0] == "aegis"
    by_path = {m["mountPath"]: mounts[m["name"]] for m in container["volumeMounts"]}
    return [AEGIS, *(str(by_path.get(arg, arg)) for arg in argv[1:])]


def inject(
    kube: Kube, namespace: str, name: str, config_hash: str
) -> tuple[dict[str, Any], dict[str, Any], dict[str, str]]:
    """Create the labelled pod ``name`` once a dry run of it is injected with
    ``config_hash`` (the injector's cache has the route); the stored pod, its sidecar
    container and that container's env as the kubelet would resolve it."""
    manifest = json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "labels": {"app": "rag-api", INJECT_LABEL: "true"}},
            "spec": {"containers": [{"name": "app", "image": "registry.invalid/rag-api:1"}]},
        }
    )

    def hashed() -> bool:
        done = kube.kubectl(
            "create", "-n", namespace, "--dry-run=server", "-o", "json", "-f", "-",
            input=manifest, check=False,  # refused while a restarted injector is not back
        )  # fmt: skip
        if done.returncode != 0:
            return False
        annotations = json.loads(done.stdout)["metadata"].get("annotations") or {}
        return bool(annotations.get(CONFIG_HASH_ANNOTATION) == config_hash)

    wait_until(hashed, timeout=60, what="the injector to inject the route's hash")
    kube.kubectl("create", "-n", namespace, "-f", "-", input=manifest)
    pod = kube.kubectl_json("get", "pod", name, "-n", namespace)
    sidecar = next(c for c in pod["spec"]["initContainers"] if c["name"] == "aegis-sidecar")
    return pod, sidecar, resolve_env(kube, pod, sidecar)


@dataclass
class Stack:
    namespace: str
    injector: Injector
    operator: ServerProcess
    cloud: FakeUpstream
    local: FakeUpstream
    pg_url: str


@pytest.fixture
def stack(
    namespace: str,
    injector: Injector,
    operator: ServerProcess,
    upstreams: tuple[FakeUpstream, FakeUpstream],
    pg_url: str,
) -> Stack:
    return Stack(namespace, injector, operator, *upstreams, pg_url)


async def test_operator_route_injected_pod_sidecar_routes_and_records(
    kube: Kube, stack: Stack, tmp_path: Path
) -> None:
    namespace, injector, pg_url = stack.namespace, stack.injector, stack.pg_url
    cloud, local = stack.cloud, stack.local
    run = asyncio.to_thread
    await run(injector.scope, namespace)
    await run(
        kube.kubectl, "create", "secret", "generic", "openai", "-n", namespace,
        f"--from-literal=apiKey={OPENAI_KEY}",
    )  # fmt: skip
    migrate = await run(
        subprocess.run, [AEGIS, "ledger", "migrate", "--url", pg_url],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert migrate.returncode == 0, migrate.stderr
    # The namespace's own ledger role, as the operator delivers it.
    tenant_dsn = await tenant_url(pg_url, namespace)
    await run(
        kube.kubectl, "create", "secret", "generic", "aegis-ledger", "-n", namespace,
        f"--from-literal=dsn={tenant_dsn}",
    )  # fmt: skip

    # 1. The operator renders the route into its ConfigMap and reports the hash.
    await run(kube.apply, route(cloud, local), namespace)

    def rendered() -> str | None:
        status = kube.kubectl_json("get", "llmroute", "rag-api", "-n", namespace).get("status")
        return (status or {}).get("configHash")

    config_hash = await run(wait_until, rendered, timeout=60, what="the operator's configHash")

    # 2. A labelled pod is injected; the hash reaches it once the injector's cache has it.
    # 3. Read back what the kubelet would get: the Pod and the ConfigMap.
    # 4. Run the sidecar container's command as a local process.
    # The sidecar listens on the port the injector bakes into the pod's args and its
    # app's env (its --sidecar-port, chosen free when the injector started). When that
    # port was taken meanwhile, the sidecar exits; the injector is then restarted with
    # another port and a new pod is injected and read back (kubectl blocks: a thread).
    config_dir, data_dir = tmp_path / "etc-aegis", tmp_path / "var-lib-aegis"
    injected: list[tuple[dict[str, Any], list[str]]] = []  # (pod, its startup probe)

    def launch(ports: list[int]) -> ServerProcess:
        if injected:  # the sidecar lost the race for its port
            injector.use_sidecar_port(ports[0])
        pod, sidecar, env = inject(kube, namespace, f"rag-api-{len(injected)}", config_hash)
        configmap = kube.kubectl_json(
            "get", "configmap", configmap_name("rag-api"), "-n", namespace
        )
        assert pod["metadata"]["annotations"][CONFIG_HASH_ANNOTATION] == config_hash
        assert OPENAI_KEY not in json.dumps(configmap["data"])  # referenced, never copied
        config_dir.mkdir(exist_ok=True)
        data_dir.mkdir(exist_ok=True)
        for key, text in configmap["data"].items():
            (config_dir / key).write_text(text)
        assert (config_dir / CONFIG_KEY).is_file()
        argv = local_argv(sidecar, {CONFIG_VOLUME: config_dir, DATA_VOLUME: data_dir})
        assert env["AEGIS_KEY_OPENAI"] == OPENAI_KEY and env["AEGIS_LEDGER_DSN"] == tenant_dsn
        env = {
            **{k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL")},
            **{k: (str(data_dir) if v == "/var/lib/aegis" else v) for k, v in env.items()},
            "AEGIS_LOG_FORMAT": "text",
        }
        probe = [AEGIS, *sidecar["startupProbe"]["exec"]["command"][1:]]
        injected.append((pod, probe))
        process = ServerProcess("sidecar", argv, tmp_path / "sidecar.log", env=env, cwd=data_dir)
        process.start()
        return process

    def started(_: list[int]) -> bool:
        probe = injected[-1][1]
        return subprocess.run(probe, capture_output=True, check=False).returncode == 0

    process, _ = await run(
        start_on_free_ports, launch, 1, started, timeout=60, what="the sidecar's startup probe"
    )
    pod = injected[-1][0]
    app = pod["spec"]["containers"][0]
    try:
        # 5. The app's own env points the unmodified openai client at the sidecar.
        base_url = env_of(app)["OPENAI_BASE_URL"]
        async with openai.AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=0) as client:
            critical = await client.chat.completions.with_raw_response.create(
                model="auto",
                messages=[{"role": "user", "content": "Summarise the incident report"}],
                extra_headers={"X-Aegis-Quality": "critical", "X-Aegis-Complexity": "high"},
            )
            plain = await client.chat.completions.with_raw_response.create(
                model="auto", messages=[{"role": "user", "content": "Hello"}]
            )
        assert (critical.headers["x-aegis-provider"], critical.headers["x-aegis-model"]) == (
            "openai",
            "gpt-4o",
        )
        assert critical.headers["x-aegis-rule"] == "critical"
        assert plain.headers["x-aegis-provider"] == "local"
        assert [r["model"] for r in cloud.requests if r.get("model")] == ["gpt-4o"]
        assert cloud.requests[-1]["headers"]["authorization"] == f"Bearer {OPENAI_KEY}"
        assert any(r.get("model") == "gemma3:4b" for r in local.requests)

        # 6. Both calls are in the Postgres ledger, attributed to the pod and the route.
        ids = {critical.headers["x-aegis-request-id"], plain.headers["x-aegis-request-id"]}

        async def rows() -> list[asyncpg.Record]:
            conn = await asyncpg.connect(pg_url)
            try:
                found: list[asyncpg.Record] = await conn.fetch(
                    "SELECT request_id, namespace, pod, route, rule, provider, model, status "
                    "FROM aegis.ledger_entries WHERE request_id = ANY($1::text[])",
                    list(ids),
                )
                return found
            finally:
                await conn.close()

        for _ in range(100):
            found = await rows()
            if len(found) == 2:
                break
            await asyncio.sleep(0.1)  # poll, at most 100 times (about 10 s)
        by_provider = {r["provider"]: r for r in found}
        assert set(by_provider) == {"openai", "local"}, found
        for row in found:
            assert (row["namespace"], row["pod"], row["route"], row["status"]) == (
                namespace, pod["metadata"]["name"], "rag-api", "ok",
            )  # fmt: skip
        assert (by_provider["openai"]["rule"], by_provider["openai"]["model"]) == (
            "critical",
            "gpt-4o",
        )
    finally:
        process.stop()
        print(process.log_tail(), file=sys.stderr)
