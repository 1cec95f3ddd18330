"""The operator under test: a real ``aegis operator`` process with minimal RBAC.

The process runs as a ServiceAccount bound to exactly the ClusterRole in
``operator/rbac.yaml`` (a bearer-token kubeconfig), so a rule missing from that
file fails the acceptance tests instead of hiding behind admin credentials.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import signal
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from tests.controlplane.kube import Kube
from tests.controlplane.procs import ServerProcess, start_on_free_ports

ROOT = Path(__file__).resolve().parents[2]
CRDS = ROOT / "crds"
EXAMPLES = CRDS / "examples"
RBAC = ROOT / "operator" / "rbac.yaml"
T = TypeVar("T")


def poll(check: Callable[[], T | None], *, timeout: float = 20.0, what: str) -> T:
    """Call ``check`` until it returns something other than None/False (no fixed sleeps)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            result = check()
        except AssertionError as error:  # a check may assert for a better message
            result, last = None, error
        if result is not None and result is not False:
            return result
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}; last: {last}")
        time.sleep(0.1)  # poll interval; the deadline is checked above


def install_crds(kube: Kube) -> None:
    for path in sorted(CRDS.glob("*.yaml")):
        kube.kubectl("apply", "-f", str(path))
    for path in sorted(CRDS.glob("*.yaml")):
        name = yaml.safe_load(path.read_text())["metadata"]["name"]
        kube.kubectl("wait", "--for=condition=Established", f"crd/{name}", "--timeout=30s")


def remove_aegis_objects(kube: Kube) -> None:
    """Delete every LLMRoute/LLMBudget/ClusterLLMBudget left (dropping finalizers: the
    operator is gone).

    The CRDs stay: installing them is idempotent and every package that needs them
    applies them itself, so no package depends on another's cleanup or setup."""
    for kind in ("llmroutes", "llmbudgets", "clusterllmbudgets"):
        listed = kube.kubectl_json("get", kind, "--all-namespaces")
        for item in listed["items"]:
            meta = item["metadata"]
            ns = ["-n", meta["namespace"]] if meta.get("namespace") else []
            kube.kubectl(
                "patch", kind, meta["name"], *ns, "--type=merge",
                "-p", '{"metadata": {"finalizers": null}}', check=False,
            )  # fmt: skip
        kube.kubectl("delete", kind, "--all", "--all-namespaces", "--ignore-not-found")


def _service_account_kubeconfig(kube: Kube, namespace: str, workdir: Path) -> Path:
    """Create the operator's ServiceAccount, ClusterRole and binding; return a kubeconfig
    holding a token of that ServiceAccount."""
    documents = [d for d in yaml.safe_load_all(RBAC.read_text()) if d]
    kube.kubectl("create", "serviceaccount", "aegis-operator", "-n", namespace)
    for original in documents:  # every ClusterRole and its binding, named for this run
        document = copy.deepcopy(original)
        document["metadata"]["name"] += f"-{namespace}"
        if document["kind"] == "ClusterRoleBinding":
            document["roleRef"]["name"] += f"-{namespace}"
            for subject in document["subjects"]:
                subject["namespace"] = namespace
        kube.apply(document)
    token = kube.kubectl(
        "create", "token", "aegis-operator", "-n", namespace, "--duration=4h"
    ).stdout.strip()
    admin = kube.kubectl_json("config", "view", "--raw", "--minify")
    cluster = admin["clusters"][0]["cluster"]
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "test", "cluster": cluster}],
        "users": [{"name": "aegis-operator", "user": {"token": token}}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": "aegis-operator"}}],
        "current-context": "test",
    }
    path = workdir / "operator.kubeconfig"
    path.write_text(json.dumps(config))
    path.chmod(0o600)
    return path


@dataclass
class OperatorProcess:
    """``python -m aegis.operator.cli operator`` against the test API server."""

    kube: Kube
    workdir: Path
    ledger_dsn: str
    platform_namespace: str
    control_dsn: str | None = None
    check_secrets: bool = True
    tenant_secret: str | None = "aegis-ledger"
    budget_interval: float = 1.0
    resync_interval: float = 3.0
    rollout_tick: float = 1.0
    health_port: int = 0  # chosen (free, retried on a clash) by start()
    metrics_port: int = 0
    extra_env: dict[str, str] = field(default_factory=dict)  # e.g. OTEL_* for a test
    last_exit: int | None = None
    _proc: ServerProcess | None = None
    _kubeconfig: Path | None = None

    def start(self) -> None:
        if self._kubeconfig is None:
            self._kubeconfig = _service_account_kubeconfig(
                self.kube, self.platform_namespace, self.workdir
            )
        env = {
            **self.kube.env,
            "KUBECONFIG": str(self._kubeconfig),
            "AEGIS_LEDGER_DSN": self.ledger_dsn,
            "AEGIS_LEDGER_CONTROL_DSN": self.control_dsn or "",
            "AEGIS_LOG_LEVEL": "DEBUG",
            "PYTHONUNBUFFERED": "1",
            **self.extra_env,
        }

        def launch(ports: list[int]) -> ServerProcess:
            self.health_port, self.metrics_port = ports
            self._proc = self._process(env)
            self._proc.start()
            return self._proc

        start_on_free_ports(
            launch,
            2,
            lambda _: self._healthy(),
            timeout=60,
            what="the operator's liveness endpoint",
        )

    def _process(self, env: dict[str, str]) -> ServerProcess:
        argv = [
            sys.executable, "-m", "aegis.operator.cli", "operator", "--all-namespaces",
            "--platform-namespace", self.platform_namespace,
            "--health-host", "127.0.0.1", "--health-port", str(self.health_port),
            "--metrics-host", "127.0.0.1", "--metrics-port", str(self.metrics_port),
            "--budget-interval", str(self.budget_interval),
            "--resync-interval", str(self.resync_interval),
            "--rollout-tick", str(self.rollout_tick),
            "--sync-heartbeat", "60",
            *(["--check-secrets"] if self.check_secrets else []),
            *(["--tenant-secret", self.tenant_secret] if self.tenant_secret else []),
        ]  # fmt: skip
        return ServerProcess("aegis-operator", argv, self.workdir / "operator.log", env=env)

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.health_port}/healthz", timeout=2
            ) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def stop(self) -> int | None:
        """SIGTERM, wait for the exit, return the exit code (None if it was not running)."""
        proc = self._proc
        if proc is None or not proc.running or proc.pid is None:
            return None
        os.kill(proc.pid, signal.SIGTERM)
        poll(lambda: not proc.running, timeout=30, what="the operator to exit on SIGTERM")
        self.last_exit = proc.returncode
        proc.stop()  # reaps anything left in the process group
        return self.last_exit

    def kill(self) -> None:
        """SIGKILL: no graceful shutdown, as when a node dies."""
        if self._proc is not None:
            self._proc.stop(signal.SIGKILL, timeout=10)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.running

    def log_tail(self, lines: int = 40) -> str:
        return "" if self._proc is None else self._proc.log_tail(lines)

    def metrics(self) -> str:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5
        ) as response:
            return str(response.read().decode())

    def metric(self, name: str, **labels: str) -> float | None:
        """The value of one sample, or None when it is not exported."""
        wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        for line in self.metrics().splitlines():
            if line.startswith("#"):
                continue
            key, _, value = line.rpartition(" ")
            metric, _, rest = key.partition("{")
            got = ",".join(sorted(rest.rstrip("}").split(","))) if rest else ""
            if metric == name and got == wanted:
                return float(value)
        return None


# -- object helpers ----------------------------------------------------------------


def get(kube: Kube, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
    done = kube.kubectl("get", kind, name, "-n", namespace, "-o", "json", check=False)
    if done.returncode != 0:
        assert "NotFound" in done.stderr, done.stderr
        return None
    found: dict[str, Any] = json.loads(done.stdout)
    return found


def condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any] | None:
    for item in ((obj or {}).get("status") or {}).get("conditions") or []:
        if item.get("type") == type_:
            return dict(item)
    return None


def wait_condition(
    kube: Kube,
    kind: str,
    name: str,
    namespace: str,
    *,
    reason: str,
    type_: str = "Ready",
    timeout: float = 20.0,
) -> dict[str, Any]:
    """Poll until the object's condition ``type_`` has ``reason``; return the condition."""

    def check() -> dict[str, Any] | None:
        found = condition(get(kube, kind, name, namespace), type_)
        return found if found and found.get("reason") == reason else None

    return poll(check, timeout=timeout, what=f"{kind}/{name} {type_} reason {reason}")


def status_field(kube: Kube, kind: str, name: str, namespace: str, field: str) -> Any:
    return ((get(kube, kind, name, namespace) or {}).get("status") or {}).get(field)


def events(kube: Kube, namespace: str, name: str, reason: str | None = None) -> list[Any]:
    listed = kube.kubectl_json(
        "get", "events", "-n", namespace, "--field-selector", f"involvedObject.name={name}"
    )
    return [e for e in listed["items"] if reason is None or e.get("reason") == reason]


def secret(name: str, **data: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name},
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }


def delete_aegis_objects(kube: Kube, namespace: str) -> None:
    kube.kubectl(
        "delete", "llmroutes,llmbudgets", "--all", "-n", namespace, "--timeout=30s", check=False
    )  # fmt: skip
