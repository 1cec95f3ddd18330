"""What injection adds to a pod, as RFC 6902 JSONPatch operations (pure functions).

Everything is *added*, nothing a user wrote is replaced: a user container, volume or
env var that collides with ours is a conflict the caller refuses, and an app
container that already sets ``OPENAI_BASE_URL`` / ``AEGIS_URL`` (or the Anthropic
SDK's ``ANTHROPIC_BASE_URL``) keeps its value.

Why each piece looks the way it does:

- Native sidecar (first init container, ``restartPolicy: Always``): it starts, and
  passes its startup probe, before other init containers and the app, and it does
  not keep a Job's pod alive. On API servers older than 1.29 it becomes the last
  regular container (the app may then start first and should retry).
- The ConfigMap is mounted as a directory, never ``subPath``: the kubelet swaps the
  whole directory atomically and the sidecar hot-reloads it; subPath mounts never
  see updates.
- Secrets are referenced with ``secretKeyRef``; the injector never reads them.
- Probes are ``exec`` (``aegis probe``) because the sidecar binds 127.0.0.1 only and
  the kubelet's HTTP probes connect to the pod IP.
- Read-only root filesystem; an ``emptyDir`` is the working directory (SQLite
  fallback ledger, temp files), so relative paths in the config land there.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

from ..api.naming import (
    CONFIG_HASH_ANNOTATION,
    CONFIG_MOUNT_PATH,
    INJECTED_ANNOTATION,
    LEDGER_DSN_ENV,
    ROUTE_ANNOTATION,
    SPOOL_DIR_ENV,
    configmap_name,
)
from .route_choice import RouteInfo
from .settings import SidecarSettings
from .workload import SERVICE_ACCOUNT_ENV, WORKLOAD_ENV, workload_of

Op = dict[str, Any]

CONFIG_VOLUME = "aegis-config"
DATA_VOLUME = "aegis-data"
DATA_MOUNT_PATH = "/var/lib/aegis"
METRICS_PORT_NAME = "aegis-metrics"  # what the chart's PodMonitor selects
APP_ENV = (
    "OPENAI_BASE_URL",
    "AEGIS_URL",
    "OPENAI_API_KEY",
    "ANTHROPIC_BASE_URL",
    "ANTHROPIC_API_KEY",
)
# The sidecar holds the real provider keys; the OpenAI and Anthropic SDKs refuse to
# start without a key, so apps that set none get this placeholder (never forwarded
# upstream).
PLACEHOLDER_API_KEY = "aegis-sidecar-holds-the-keys"
DEFAULT_CONTAINER_ANNOTATION = "kubectl.kubernetes.io/default-container"


def escape(token: str) -> str:
    """A JSON Pointer reference token (RFC 6901): ``~`` → ``~0``, ``/`` → ``~1``."""
    return token.replace("~", "~0").replace("/", "~1")


def _probe(path: str, settings: SidecarSettings, **timing: int) -> dict[str, Any]:
    url = f"{settings.aegis_url}{path}"
    return {"exec": {"command": ["aegis", "probe", url]}, "timeoutSeconds": 3, **timing}


def _copy_resources(resources: Mapping[str, Any]) -> dict[str, Any]:
    """requests/limits are maps of strings, so two levels are a deep copy (10x cheaper
    than ``copy.deepcopy`` on the admission path); anything else (claims) is deep-copied."""
    return {
        key: dict(value) if isinstance(value, Mapping) else copy.deepcopy(value)
        for key, value in resources.items()
    }


def sidecar_env(
    route: RouteInfo, settings: SidecarSettings, workload: str | None = None
) -> list[dict[str, Any]]:
    """The sidecar's environment: pod identity and attribution (the pod's ServiceAccount
    and ``workload``, :func:`~.workload.workload_of`), provider keys and ledger DSN by
    reference."""

    def field_ref(path: str) -> dict[str, Any]:
        return {"fieldRef": {"apiVersion": "v1", "fieldPath": path}}

    env: list[dict[str, Any]] = [
        {"name": "POD_NAME", "valueFrom": field_ref("metadata.name")},
        {"name": "POD_NAMESPACE", "valueFrom": field_ref("metadata.namespace")},
        {"name": SERVICE_ACCOUNT_ENV, "valueFrom": field_ref("spec.serviceAccountName")},
    ]
    if workload:
        env.append({"name": WORKLOAD_ENV, "value": workload})
    env += [
        {"name": "HOME", "value": DATA_MOUNT_PATH},
        {"name": "TMPDIR", "value": DATA_MOUNT_PATH},
        # The ledger spool survives sidecar restarts within the pod (emptyDir).
        {"name": SPOOL_DIR_ENV, "value": f"{DATA_MOUNT_PATH}/spool"},
    ]
    if settings.ledger_secret_name:
        ref = {"name": settings.ledger_secret_name, "key": settings.ledger_secret_key}
        env.append({"name": LEDGER_DSN_ENV, "valueFrom": {"secretKeyRef": ref}})
    for key in route.keys:
        ref = {"name": key.secret_name, "key": key.secret_key}
        env.append({"name": key.env, "valueFrom": {"secretKeyRef": ref}})
    if settings.otel_env:  # traces on: the standard OpenTelemetry variables
        env += [{"name": k, "value": v} for k, v in sorted(settings.otel_env.items())]
        if "OTEL_RESOURCE_ATTRIBUTES" not in settings.otel_env:
            pod = "k8s.pod.name=$(POD_NAME),k8s.namespace.name=$(POD_NAMESPACE)"
            env.append({"name": "OTEL_RESOURCE_ATTRIBUTES", "value": pod})
    return env


def sidecar_container(
    route: RouteInfo, settings: SidecarSettings, native: bool, workload: str | None = None
) -> dict[str, Any]:
    """The injected container (an init container with ``restartPolicy: Always`` if native)."""
    container: dict[str, Any] = {
        "name": settings.container_name,
        "image": settings.image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": ["aegis"],
        "args": [
            "sidecar",
            "--config",
            CONFIG_MOUNT_PATH,
            "--port",
            str(settings.port),
            "--metrics-port",
            str(settings.metrics_port),
            # The API stays on 127.0.0.1; the metrics too unless Prometheus scrapes them.
            "--metrics-host",
            settings.metrics_host,
        ],
        "workingDir": DATA_MOUNT_PATH,
        "env": sidecar_env(route, settings, workload),
        "resources": _copy_resources(settings.resources),
        "volumeMounts": [
            {"name": CONFIG_VOLUME, "mountPath": CONFIG_MOUNT_PATH, "readOnly": True},
            {"name": DATA_VOLUME, "mountPath": DATA_MOUNT_PATH},
        ],
        "startupProbe": _probe("/readyz", settings, periodSeconds=1, failureThreshold=120),
        "readinessProbe": _probe("/readyz", settings, periodSeconds=10, failureThreshold=3),
        "livenessProbe": _probe("/healthz", settings, periodSeconds=20, failureThreshold=3),
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": settings.run_as_user,
            "runAsGroup": settings.run_as_user,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "privileged": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if settings.metrics_port > 0:
        port = {"name": METRICS_PORT_NAME, "containerPort": settings.metrics_port}
        container["ports"] = [{**port, "protocol": "TCP"}]
    if native:
        container["restartPolicy"] = "Always"
    return container


def volumes(route: RouteInfo, settings: SidecarSettings) -> list[dict[str, Any]]:
    return [
        {
            "name": CONFIG_VOLUME,
            "configMap": {"name": configmap_name(route.name), "defaultMode": 0o444},
        },
        {"name": DATA_VOLUME, "emptyDir": {"sizeLimit": settings.data_size_limit}},
    ]


def conflicts(pod: Mapping[str, Any], settings: SidecarSettings) -> list[str]:
    """Everything in the pod that collides with what injection adds (empty: none)."""
    spec = pod.get("spec") or {}
    problems = []
    for kind in ("containers", "initContainers", "ephemeralContainers"):
        for container in spec.get(kind) or []:
            if container.get("name") == settings.container_name:
                problems.append(f"{kind} already has a container named {settings.container_name}")
            for port in container.get("ports") or []:
                if port.get("containerPort") in (settings.port, settings.metrics_port):
                    problems.append(
                        f"container {container.get('name')} uses port "
                        f"{port['containerPort']}, which the Aegis sidecar listens on"
                    )
    for volume in spec.get("volumes") or []:
        if volume.get("name") in (CONFIG_VOLUME, DATA_VOLUME):
            problems.append(f"volume {volume['name']} already exists")
    if spec.get("hostNetwork"):
        problems.append(
            "hostNetwork pods share the node's 127.0.0.1, where sidecars of other pods "
            "would collide"
        )
    return problems


def _append(spec: Mapping[str, Any], path: str, key: str, items: Sequence[Any]) -> list[Op]:
    """Ops appending ``items`` to list ``spec[key]`` at ``path`` (creating it if absent)."""
    if not items:
        return []
    if not spec.get(key):
        return [{"op": "add", "path": f"{path}/{key}", "value": list(items)}]
    return [{"op": "add", "path": f"{path}/{key}/-", "value": item} for item in items]


def app_env_ops(spec: Mapping[str, Any], settings: SidecarSettings) -> list[Op]:
    """``OPENAI_BASE_URL``, ``AEGIS_URL``, ``ANTHROPIC_BASE_URL`` (the Anthropic SDK
    adds ``/v1`` itself) and placeholder keys for every app container that lacks them."""
    values = {
        "OPENAI_BASE_URL": settings.openai_base_url,
        "AEGIS_URL": settings.aegis_url,
        "OPENAI_API_KEY": PLACEHOLDER_API_KEY,
        "ANTHROPIC_BASE_URL": settings.aegis_url,
        "ANTHROPIC_API_KEY": PLACEHOLDER_API_KEY,
    }
    ops: list[Op] = []
    for index, container in enumerate(spec.get("containers") or []):
        if container.get("name") == settings.container_name:
            continue
        present = {item.get("name") for item in container.get("env") or []}
        missing = [{"name": n, "value": values[n]} for n in APP_ENV if n not in present]
        ops += _append(container, f"/spec/containers/{index}", "env", missing)
    return ops


def pod_annotations(route: RouteInfo, version: str) -> dict[str, str]:
    return {
        INJECTED_ANNOTATION: f"aegis-injector/{version}",
        CONFIG_HASH_ANNOTATION: route.config_hash or "pending",
        ROUTE_ANNOTATION: route.name,
    }


def injection_ops(
    pod: Mapping[str, Any],
    route: RouteInfo,
    settings: SidecarSettings,
    *,
    native: bool,
    version: str,
) -> list[Op]:
    """The JSONPatch that injects the sidecar (the caller has checked :func:`conflicts`)."""
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    added = pod_annotations(route, version)
    containers = spec.get("containers") or []
    if (
        not native
        and containers
        and DEFAULT_CONTAINER_ANNOTATION not in (meta.get("annotations") or {})
    ):
        # `kubectl logs/exec` keep defaulting to the app, not to the appended sidecar.
        added[DEFAULT_CONTAINER_ANNOTATION] = containers[0]["name"]
    ops: list[Op] = []
    if meta.get("annotations"):
        ops += [
            {"op": "add", "path": f"/metadata/annotations/{escape(k)}", "value": v}
            for k, v in added.items()
        ]
    else:
        ops.append({"op": "add", "path": "/metadata/annotations", "value": added})
    ops += _append(spec, "/spec", "volumes", volumes(route, settings))
    sidecar = sidecar_container(route, settings, native, workload_of(pod))
    if native:
        if spec.get("initContainers"):
            ops.append({"op": "add", "path": "/spec/initContainers/0", "value": sidecar})
        else:
            ops.append({"op": "add", "path": "/spec/initContainers", "value": [sidecar]})
    else:
        ops += _append(spec, "/spec", "containers", [sidecar])
    ops += app_env_ops(spec, settings)
    return ops
