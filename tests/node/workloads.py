"""Pods and Services the node tests create, and how they wait for them.

Everything runs from the Aegis image (`local/aegis:<key>`, pull policy Never: it was
imported into containerd, no registry is involved). Waiting is `kubectl wait`, which
polls the API server; nothing sleeps.
"""

from __future__ import annotations

import json
from typing import Any

from tests.controlplane.kube import Kube
from tests.controlplane.procs import wait_until

#: The pod-level and container-level settings the chart uses for every Aegis container.
RESTRICTED_POD = {
    "runAsNonRoot": True,
    "runAsUser": 65532,
    "runAsGroup": 65532,
    "seccompProfile": {"type": "RuntimeDefault"},
}
RESTRICTED_CONTAINER = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
}
FAKE_PORT = 8080


def pod(
    name: str,
    image: str,
    command: list[str],
    *,
    labels: dict[str, str] | None = None,
    restart: str = "Never",
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A restricted pod (non-root, read-only root) running `command` in `image`."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels or {}, "annotations": annotations or {}},
        "spec": {
            "restartPolicy": restart,
            "terminationGracePeriodSeconds": 1,
            "securityContext": RESTRICTED_POD,
            "containers": [
                {
                    "name": "main",
                    "image": image,
                    "imagePullPolicy": "Never",
                    "command": command,
                    "securityContext": RESTRICTED_CONTAINER,
                }
            ],
        },
    }


def python_pod(name: str, image: str, code: str, **kwargs: Any) -> dict[str, Any]:
    """A pod running `code` with the image's Python (the Aegis venv's)."""
    return pod(name, image, ["python3", "-c", code], **kwargs)


def run_to_completion(
    kube: Kube, namespace: str, manifest: dict[str, Any], timeout: float = 120.0
) -> str:
    """Create the pod, wait until it ends and return its logs; fail (with them) unless it
    succeeded."""
    name = manifest["metadata"]["name"]
    kube.apply(manifest, namespace=namespace)

    def ended() -> str | None:
        phase = kube.kubectl(
            "-n", namespace, "get", "pod", name, "-o", "jsonpath={.status.phase}"
        ).stdout
        return phase if phase in ("Succeeded", "Failed") else None

    try:
        phase = wait_until(ended, timeout=timeout, what=f"pod {name} to finish", interval=0.5)
    except TimeoutError as error:
        phase = str(error)
    logs = kube.kubectl("-n", namespace, "logs", name, check=False).stdout
    if phase != "Succeeded":
        status = kube.kubectl("-n", namespace, "get", "pod", name, "-o", "yaml", check=False)
        raise AssertionError(f"pod {name}: {phase}\nlogs:\n{logs}\n{status.stdout[-3000:]}")
    return logs


def fake_upstream(
    kube: Kube,
    namespace: str,
    image: str,
    name: str = "fake-openai",
    *,
    kind: str = "openai",
    wait: bool = True,
) -> str:
    """A fake upstream (``aegis fake-upstream``: OpenAI, DashScope or Ollama wire) as a
    Deployment behind a Service on port 80; returns the ClusterIP."""
    labels = {"app": name}
    template = pod(
        name,
        image,
        [
            "aegis",
            "fake-upstream",
            "--kind",
            kind,
            "--host",
            "0.0.0.0",
            "--port",
            str(FAKE_PORT),
        ],
        labels=labels,
        restart="Always",
    )
    container = template["spec"]["containers"][0]
    container["ports"] = [{"name": "http", "containerPort": FAKE_PORT}]
    container["readinessProbe"] = {"tcpSocket": {"port": FAKE_PORT}, "periodSeconds": 1}
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": template["spec"]},
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "labels": labels},
        "spec": {"selector": labels, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]},
    }
    kube.apply({"apiVersion": "v1", "kind": "List", "items": [deployment, service]}, namespace)
    if wait:
        kube.kubectl(
            "-n",
            namespace,
            "rollout",
            "status",
            f"deployment/{name}",
            "--timeout=120s",
            timeout=150,
        )
    ip: str = kube.kubectl_json("-n", namespace, "get", "service", name)["spec"]["clusterIP"]
    return ip


def http_client_code(url: str, body: dict[str, Any] | None = None) -> str:
    """Python for a pod: request `url` (POST `body` as JSON), print status, headers, body."""
    data = "None" if body is None else f"{json.dumps(json.dumps(body))}.encode()"
    headers = {"Content-Type": "application/json", "Authorization": "Bearer sk-node-test"}
    return (
        "import json, urllib.request\n"
        f"req = urllib.request.Request({url!r}, data={data}, headers={headers!r})\n"
        "with urllib.request.urlopen(req, timeout=30) as r:\n"
        "    print(json.dumps({'status': r.status, 'headers': dict(r.headers), "
        "'body': json.loads(r.read())}))\n"
    )
