"""The product as a platform team and an app team would set it up, for the node tests.

Namespace ``shop``: fake OpenAI, DashScope and Ollama upstreams as Deployments behind
Services, their API-key Secrets, the ``LLMRoute`` ``shop-api`` (the origin's policy:
PII local, critical + high to OpenAI, batches to DashScope, the rest local), two
``LLMBudget``s (OpenAI: ``Reject`` when exceeded or when the ledger is unreachable, so
paid traffic fails closed; DashScope: ``FallbackLocal``) and the app Deployment, opted
in for injection, whose container holds the official ``openai`` SDK (the client image).

:class:`Shop` runs the app's calls inside its container (``kubectl exec``) with the
``openai`` client against the injected sidecar, and reads the sidecar's ``/readyz``
and ``/metrics`` on the pod's loopback the same way.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from typing import Any

from tests.controlplane.kube import Kube
from tests.controlplane.procs import wait_until
from tests.node.workloads import RESTRICTED_CONTAINER, RESTRICTED_POD, fake_upstream

NS = "shop"
ROUTE = "shop-api"
APP = "shop-api"
FAKES = {"openai": "openai", "dashscope": "dashscope", "local": "ollama"}


def base_url(kind: str) -> str:
    host = f"http://fake-{kind}.{NS}.svc.cluster.local"
    return {"openai": f"{host}/v1", "dashscope": f"{host}/compatible-mode/v1"}.get(kind, host)


def route() -> dict[str, Any]:
    return {
        "apiVersion": "aegis.io/v1alpha1",
        "kind": "LLMRoute",
        "metadata": {"name": ROUTE},
        "spec": {
            "podSelector": {"matchLabels": {"app": APP}},
            "providers": [
                {
                    "name": "local",
                    "type": "ollama",
                    "locality": "local",
                    "baseURL": base_url("ollama"),
                    "models": {"default": "gemma3:4b"},
                },
                {
                    "name": "dashscope",
                    "type": "dashscope",
                    "locality": "cloud",
                    "baseURL": base_url("dashscope"),
                    "apiKeySecretRef": {"name": "dashscope", "key": "apiKey"},
                    "models": {"default": "qwen-plus"},
                    "pricing": {"qwen-plus": {"inputPer1M": 0.4, "outputPer1M": 1.2}},
                },
                {
                    "name": "openai",
                    "type": "openai",
                    "locality": "cloud",
                    "baseURL": base_url("openai"),
                    "apiKeySecretRef": {"name": "openai", "key": "apiKey"},
                    "models": {"default": "gpt-4o-mini"},
                    # Prices that make a handful of short test answers show in the
                    # budget's status (which counts whole cents).
                    "pricing": {
                        model: {"inputPer1M": 1000, "outputPer1M": 3000}
                        for model in ("gpt-4o", "gpt-4o-mini")
                    },
                },
            ],
            "privacy": {"localOnly": ["pii", "hipaa", "confidential"], "detect": True},
            "rules": [
                {
                    "name": "sensitive",
                    "match": {"dataClass": ["pii", "hipaa", "confidential"]},
                    "to": {"provider": "local"},
                },
                {
                    "name": "critical",
                    "match": {"quality": ["critical"], "complexity": ["high"]},
                    "to": {"provider": "openai", "model": "gpt-4o"},
                },
                {"name": "batch", "match": {"minBatchSize": 11}, "to": {"provider": "dashscope"}},
            ],
            "default": {"provider": "local"},
            "fallback": ["local"],
        },
    }


def budgets() -> list[dict[str, Any]]:
    def budget(name: str, provider: str, limit: int, on_exceeded: str) -> dict[str, Any]:
        return {
            "apiVersion": "aegis.io/v1alpha1",
            "kind": "LLMBudget",
            "metadata": {"name": name},
            "spec": {"provider": provider, "limitUSD": limit, "onExceeded": on_exceeded},
        }

    return [
        budget("openai-monthly", "openai", 80, "Reject"),
        budget("dashscope-monthly", "dashscope", 120, "FallbackLocal"),
    ]


def app(image: str) -> dict[str, Any]:
    labels = {"app": APP}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": APP, "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": {**labels, "aegis.io/inject": "true"}},
                "spec": {
                    "terminationGracePeriodSeconds": 5,
                    "securityContext": RESTRICTED_POD,
                    "containers": [
                        {
                            "name": "app",
                            "image": image,
                            "imagePullPolicy": "Never",
                            "command": ["sleep", "infinity"],
                            "securityContext": RESTRICTED_CONTAINER,
                        }
                    ],
                },
            },
        },
    }


def secrets() -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name},
            "stringData": {"apiKey": f"sk-{name}-node-test"},
        }
        for name in ("openai", "dashscope")
    ]


#: Runs in the app container: each call of argv[1] (JSON) with the openai client, one
#: JSON result per line. {"loop": call} repeats the call until stdin closes.
CLIENT = r"""
import json, sys, threading, time
import openai

client = openai.OpenAI(max_retries=0, timeout=30)

def aegis(headers):
    return {k.lower(): v for k, v in headers.items() if k.lower().startswith("x-aegis")}

def call(spec):
    kwargs = {
        "model": spec.get("model", "auto"),
        "messages": [{"role": "user", "content": spec["text"]}],
        "extra_headers": spec.get("headers", {}),
    }
    try:
        if spec.get("stream"):
            with client.chat.completions.with_streaming_response.create(
                stream=True, stream_options={"include_usage": True}, **kwargs
            ) as resp:
                chunks = list(resp.parse())
                text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
                return {"status": resp.status_code, "text": text, "chunks": len(chunks),
                        "headers": aegis(resp.headers)}
        raw = client.chat.completions.with_raw_response.create(**kwargs)
        done = raw.parse()
        return {"status": raw.status_code, "text": done.choices[0].message.content,
                "usage": done.usage.model_dump() if done.usage else None,
                "headers": aegis(raw.headers)}
    except openai.APIStatusError as error:
        return {"status": error.status_code, "error": error.body,
                "headers": aegis(error.response.headers)}
    except openai.APIConnectionError as error:
        return {"status": 0, "error": repr(error), "headers": {}}

calls = json.loads(sys.argv[1])
if isinstance(calls, dict):
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    n = 0
    while not stop.is_set():
        spec = dict(calls["loop"], headers={**calls["loop"].get("headers", {}),
                                            "X-Aegis-User": f"loop-{n}"})
        print(json.dumps({"at": time.time(), **call(spec)}), flush=True)
        n += 1
        stop.wait(calls.get("every", 0.2))
else:
    for spec in calls:
        print(json.dumps(call(spec)), flush=True)
"""

#: GET a URL from inside a container (Python's urllib), print status and body.
FETCH = r"""
import json, sys, urllib.error, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=10) as r:
        print(json.dumps({"status": r.status, "body": r.read().decode()}))
except urllib.error.HTTPError as e:
    print(json.dumps({"status": e.code, "body": e.read().decode()}))
"""


@dataclass
class Shop:
    kube: Kube
    client_image: str
    aegis_image: str

    def kubectl(self, *args: str, timeout: float = 60.0, check: bool = True) -> str:
        return self.kube.kubectl("-n", NS, *args, timeout=timeout, check=check).stdout

    def app_pod(self) -> dict[str, Any]:
        """The app's one running pod (not one that is terminating)."""
        found = self.kube.kubectl_json("-n", NS, "get", "pods", "-l", f"app={APP}")["items"]
        live = [p for p in found if not p["metadata"].get("deletionTimestamp")]
        assert len(live) == 1, [p["metadata"]["name"] for p in found]
        return dict(live[0])

    def exec_app(self, *argv: str, timeout: float = 120.0, container: str = "app") -> str:
        pod = self.app_pod()["metadata"]["name"]
        return self.kubectl("exec", pod, "-c", container, "--", *argv, timeout=timeout)

    def calls(self, *specs: dict[str, Any]) -> list[dict[str, Any]]:
        """Each call with the openai client in the app container."""
        out = self.exec_app("python3", "-c", CLIENT, json.dumps(list(specs)))
        return [json.loads(line) for line in out.splitlines() if line.startswith("{")]

    def loop(self, spec: dict[str, Any], every: float = 0.2) -> subprocess.Popen[str]:
        """The same call repeated until the returned process's stdin is closed."""
        pod = self.app_pod()["metadata"]["name"]
        argv = [
            self.kube.kubectl_bin,
            "-n",
            NS,
            "exec",
            "-i",
            pod,
            "-c",
            "app",
            "--",
            "python3",
            "-c",
            CLIENT,
            json.dumps({"loop": spec, "every": every}),
        ]
        return subprocess.Popen(
            argv,
            env=self.kube.env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def fetch(self, url: str, pod: str | None = None, container: str = "app") -> dict[str, Any]:
        if pod is None:
            out = self.exec_app("python3", "-c", FETCH, url, container=container)
        else:
            out = self.kubectl("exec", pod, "-c", container, "--", "python3", "-c", FETCH, url)
        return dict(json.loads(out.strip().splitlines()[-1]))

    def readyz(self) -> dict[str, Any]:
        return dict(json.loads(self.fetch("http://127.0.0.1:8787/readyz")["body"]))

    def sidecar_metrics(self) -> str:
        return str(self.fetch("http://127.0.0.1:9787/metrics")["body"])

    def fake_requests(self, kind: str) -> list[dict[str, Any]]:
        url = f"http://fake-{kind}.{NS}.svc.cluster.local/_fake/requests"
        return list(json.loads(self.fetch(url)["body"])["requests"])

    def set_knobs(self, kind: str, knobs: dict[str, Any]) -> None:
        code = (
            "import json, sys, urllib.request\n"
            "req = urllib.request.Request(sys.argv[1], data=sys.argv[2].encode(),"
            " headers={'Content-Type': 'application/json'})\n"
            "urllib.request.urlopen(req, timeout=10).read()\n"
        )
        url = f"http://fake-{kind}.{NS}.svc.cluster.local/_fake/knobs"
        self.exec_app("python3", "-c", code, url, json.dumps(knobs))

    def route(self) -> dict[str, Any]:
        return dict(self.kube.kubectl_json("-n", NS, "get", "llmroute", ROUTE))

    def set_critical_model(self, model: str) -> str:
        """Point the route's critical rule at `model` (another than now); returns the
        config hash before the change."""
        route = self.route()
        assert route["spec"]["rules"][1]["to"]["model"] != model, route["spec"]["rules"]
        patch = [{"op": "replace", "path": "/spec/rules/1/to/model", "value": model}]
        self.kubectl("patch", "llmroute", ROUTE, "--type=json", "-p", json.dumps(patch))
        return str(route["status"]["configHash"])

    def wait_sidecar_config(self, timeout: float = 90.0, changed_from: str = "") -> str:
        """Until the route is Ready and the sidecar serves the config its status names
        (the kubelet has delivered the ConfigMap and the sidecar reloaded it), and that
        config is not `changed_from`."""

        def current() -> str | None:
            status = self.route().get("status", {})
            ready = [c for c in status.get("conditions", []) if c["type"] == "Ready"]
            wanted = status.get("configHash")
            if not (ready and ready[0]["status"] == "True" and wanted != changed_from):
                return None
            return str(wanted) if self.readyz()["config"]["hash"] == wanted else None

        return wait_until(
            current, timeout=timeout, what="the sidecar to load the route", interval=1
        )


def setup_namespace(shop: Shop) -> None:
    """Everything of the shop but the app: namespace, Secrets, fakes, route, budgets.
    A shop an earlier session kept (``AEGIS_E2E_KEEP``) is removed first: its pods hold
    a ledger role of a database that is gone."""
    kube = shop.kube
    kube.kubectl("delete", "namespace", NS, "--ignore-not-found", "--timeout=180s", timeout=200)
    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    for secret in secrets():
        kube.apply(secret, NS)
    for kind in FAKES.values():
        fake_upstream(kube, NS, shop.aegis_image, f"fake-{kind}", kind=kind, wait=False)
    kube.apply({"apiVersion": "v1", "kind": "List", "items": [route(), *budgets()]}, NS)
    for kind in FAKES.values():
        shop.kubectl("rollout", "status", f"deployment/fake-{kind}", "--timeout=180s", timeout=200)
