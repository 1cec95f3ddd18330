"""First proof of the node: Ready, the image runs restricted, DNS and Services work."""

from __future__ import annotations

import json
import time

import pytest

from tests.controlplane import versions
from tests.controlplane.procs import wait_until
from tests.node.conftest import NodeCluster, Say
from tests.node.workloads import (
    fake_upstream,
    http_client_code,
    pod,
    python_pod,
    run_to_completion,
)

pytestmark = [pytest.mark.node, pytest.mark.slow]


def test_node_is_ready_with_the_pinned_kubelet(cluster: NodeCluster, say: Say) -> None:
    node = cluster.kube.kubectl_json("get", "node", cluster.layout.node_name)
    ready = {c["type"]: c["status"] for c in node["status"]["conditions"]}["Ready"]
    info = node["status"]["nodeInfo"]
    assert ready == "True"
    assert info["kubeletVersion"] == versions.KUBERNETES
    assert info["containerRuntimeVersion"].startswith("containerd://")
    say(cluster.kube.kubectl("get", "nodes", "-o", "wide").stdout)
    say(cluster.kube.kubectl("get", "pods", "-A", "-o", "wide").stdout)


def test_image_runs_as_65532_with_a_read_only_root(cluster: NodeCluster, ns: str, say: Say) -> None:
    script = (
        "id -u; id -g; aegis --help | head -n 1; "
        "if touch /probe 2>/dev/null; then echo root-writable; else echo root-read-only; fi"
    )
    logs = run_to_completion(
        cluster.kube, ns, pod("restricted", cluster.images.aegis.short, ["sh", "-c", script])
    )
    spec = cluster.kube.kubectl_json("-n", ns, "get", "pod", "restricted")["spec"]
    assert spec["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
    assert logs.split()[:2] == ["65532", "65532"], logs
    assert "usage: aegis" in logs
    assert "root-read-only" in logs and "root-writable" not in logs
    say(f"{cluster.images.aegis.short} as uid 65532, readOnlyRootFilesystem:\n{logs}")


def test_aegis_version_runs_in_the_image(cluster: NodeCluster, ns: str, say: Say) -> None:
    logs = run_to_completion(
        cluster.kube, ns, pod("version", cluster.images.aegis.short, ["aegis", "--version"])
    )
    say(logs)
    assert "0.1.0" in logs


def test_dns_resolves_a_service_that_routes_to_a_pod(
    cluster: NodeCluster, ns: str, say: Say
) -> None:
    cluster_ip = fake_upstream(cluster.kube, ns, cluster.images.aegis.short)
    name = f"fake-openai.{ns}.svc.{cluster.layout.cluster_domain}"
    code = (
        "import socket\n"
        f"print(socket.gethostbyname({name!r}))\n"
        "print(socket.gethostbyname('fake-openai'))\n"  # the namespace's search path
        + http_client_code("http://fake-openai/v1/models")
    )
    logs = run_to_completion(
        cluster.kube, ns, python_pod("dns-client", cluster.images.aegis.short, code)
    )
    lines = logs.strip().splitlines()
    assert lines[0] == cluster_ip and lines[1] == cluster_ip, logs
    answer = json.loads(lines[2])
    assert answer["status"] == 200
    assert any(model["id"] for model in answer["body"]["data"])
    say(f"{name} -> {cluster_ip} (CoreDNS), GET /v1/models through the Service: {answer['status']}")


def test_configmap_update_reaches_a_running_pod_within_seconds(
    cluster: NodeCluster, ns: str, say: Say
) -> None:
    """The kubelet re-syncs ConfigMap volumes every `syncFrequency` (2 s here)."""
    kube = cluster.kube
    configmap = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "settings"},
        "data": {"value": "one"},
    }
    kube.apply(configmap, ns)
    idle = "import time; time.sleep(3600)"  # the pod idles: pacing, not a wait
    reader = python_pod("reader", cluster.images.aegis.short, idle)
    reader["spec"]["containers"][0]["volumeMounts"] = [{"name": "cfg", "mountPath": "/cfg"}]
    reader["spec"]["volumes"] = [{"name": "cfg", "configMap": {"name": "settings"}}]
    kube.apply(reader, ns)
    kube.kubectl("-n", ns, "wait", "pod/reader", "--for=condition=Ready", "--timeout=120s")

    def mounted() -> str:
        return kube.kubectl("-n", ns, "exec", "reader", "--", "cat", "/cfg/value").stdout

    assert mounted() == "one"
    configmap["data"] = {"value": "two"}
    kube.apply(configmap, ns)
    started = time.monotonic()
    wait_until(
        lambda: mounted() == "two", timeout=30, what="the new value in the pod", interval=0.2
    )
    delay = time.monotonic() - started
    say(f"ConfigMap update visible in the running pod after {delay:.1f}s")
    assert delay < 15, "the kubelet did not pick up syncFrequency: 2s"
