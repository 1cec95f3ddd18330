"""Admission latency of ``aegis injector`` next to a trivial aiohttp TLS webhook, same run.

Both servers answer AdmissionReview POSTs over HTTPS with keep-alive (as the API
server calls them); each runs alone in a child process pinned to core 1 while this
load generator runs on core 0. The trivial webhook parses the review and returns a
fixed one-op JSONPatch; the injector runs the real handler (route selection from its
in-memory cache, conflict checks, the full sidecar patch, metrics) for a realistic
Deployment-made pod. Sequential latency is what one pod creation waits for; the
concurrent run shows the tail under a burst (e.g. a large rollout).

    python tests/bench/injector_admission.py [--quick] [--no-check]

Target: injector p99 <= 10 ms (sequential); exit 1 when missed unless --no-check.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime
import json
import os
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

TARGET_P99_MS = 10.0
NAMESPACE = "shop"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def realistic_pod() -> dict[str, Any]:
    """A pod as a ReplicaSet creates it: owner, two containers, env, probes, volumes."""
    env = [{"name": f"SETTING_{i}", "value": f"value-{i}"} for i in range(12)]
    container: dict[str, Any] = {
        "name": "api",
        "image": "registry.example.com/shop/rag-api:2.14.1",
        "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
        "env": env,
        "resources": {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"memory": "1Gi"}},
        "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}, "periodSeconds": 5},
        "volumeMounts": [
            {"name": "kube-api-access", "mountPath": "/var/run/secrets", "readOnly": True}
        ],
        "terminationMessagePath": "/dev/termination-log",
        "imagePullPolicy": "IfNotPresent",
    }
    worker = {**container, "name": "worker", "ports": [], "env": env[:4]}
    return {
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {
            "generateName": "rag-api-7d9f8b6c5-",
            "namespace": NAMESPACE,
            "labels": {
                "app": "rag-api",
                "pod-template-hash": "7d9f8b6c5",
                "aegis.io/inject": "true",
                "app.kubernetes.io/version": "2.14.1",
            },
            "annotations": {"prometheus.io/scrape": "true"},
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "name": "rag-api-7d9f8b6c5",
                    "uid": str(uuid.uuid4()),
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "containers": [container, worker],
            "volumes": [
                {
                    "name": "kube-api-access",
                    "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]},
                }
            ],
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 30,
            "dnsPolicy": "ClusterFirst",
            "serviceAccountName": "default",
            "securityContext": {},
            "schedulerName": "default-scheduler",
            "tolerations": [
                {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute"}
            ],
            "priority": 0,
            "enableServiceLinks": True,
            "preemptionPolicy": "PreemptLowerPriority",
        },
        "status": {},
    }


def review_body() -> bytes:
    review = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()),
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": NAMESPACE,
            "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": realistic_pod(),
            "oldObject": None,
            "dryRun": False,
            "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"},
        },
    }
    return json.dumps(review).encode()


# -- the two servers (child processes) -------------------------------------------------------
def baseline_app() -> web.Application:
    patch = base64.b64encode(
        json.dumps([{"op": "add", "path": "/metadata/labels/bench", "value": "yes"}]).encode()
    ).decode()

    async def mutate(request: web.Request) -> web.Response:
        review = json.loads(await request.read())
        response = {
            "uid": review["request"]["uid"],
            "allowed": True,
            "patchType": "JSONPatch",
            "patch": patch,
        }
        return web.json_response(
            {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}
        )

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.router.add_post("/inject/pod", mutate)
    app.router.add_get("/healthz", healthz)
    return app


def injector_app() -> web.Application:
    from aegis.operator.injector.cache import StaticRoutes
    from aegis.operator.injector.route_choice import KeyRef, RouteInfo
    from aegis.operator.injector.settings import SidecarSettings
    from aegis.operator.injector.webhook import Injector, build_app

    keys = (
        KeyRef("AEGIS_KEY_OPENAI", "openai", "apiKey"),
        KeyRef("AEGIS_KEY_DASHSCOPE", "dashscope", "apiKey"),
    )
    routes = [
        RouteInfo(
            "rag-api", NAMESPACE, {"matchLabels": {"app": "rag-api"}}, keys, "5f2c0d1e9a7b3c44"
        ),
        RouteInfo("chat", NAMESPACE, {"matchLabels": {"app": "chat"}}, keys, "0a1b2c3d4e5f6a7b"),
        RouteInfo(
            "batch",
            NAMESPACE,
            {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["batch"]}]},
            keys,
            "1122334455667788",
        ),
    ]
    injector = Injector(
        StaticRoutes(routes),
        SidecarSettings(image="ghcr.io/aegis-llm/aegis:0.1.0"),
        native=True,
        never_injected=frozenset({"kube-system", "aegis-system"}),
    )
    return build_app(injector)


def serve(kind: str, port: int, cert_dir: Path) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_dir / "tls.crt", cert_dir / "tls.key")
    app = injector_app() if kind == "injector" else baseline_app()
    web.run_app(app, host="127.0.0.1", port=port, ssl_context=context, access_log=None, print=None)


# -- the load generator --------------------------------------------------------------------
def make_certs(directory: Path) -> None:
    from aegis.operator.injector import certs

    policy = certs.Policy(sans=("127.0.0.1",))
    state, _ = certs.plan(None, policy, datetime.datetime.now(datetime.UTC))
    (directory / "tls.crt").write_bytes(state.tls_cert)
    (directory / "tls.key").write_bytes(state.tls_key)
    (directory / "ca.crt").write_bytes(state.ca_cert)


def spawn(kind: str, port: int, cert_dir: Path) -> subprocess.Popen[bytes]:
    cmd = [
        sys.executable,
        __file__,
        "--serve",
        kind,
        "--port",
        str(port),
        "--cert-dir",
        str(cert_dir),
    ]
    if shutil.which("taskset") and (os.cpu_count() or 1) > 1:
        cmd = ["taskset", "-c", "1", *cmd]
    env = {**os.environ, "AEGIS_LOG_LEVEL": "WARNING"}
    return subprocess.Popen(cmd, env=env)


async def wait_ready(http: aiohttp.ClientSession, url: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            async with http.get(url) as response:
                if response.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.05)  # poll until ready, within the deadline above
    raise RuntimeError(f"{url} did not become ready")


async def post(http: aiohttp.ClientSession, url: str, body: bytes) -> float:
    started = time.perf_counter()
    async with http.post(url, data=body, headers={"Content-Type": "application/json"}) as response:
        answer = await response.read()
    elapsed = time.perf_counter() - started
    if response.status != 200 or not json.loads(answer)["response"]["allowed"]:
        raise RuntimeError(f"unexpected answer {response.status}: {answer[:300]!r}")
    return elapsed


async def sequential(http: aiohttp.ClientSession, url: str, body: bytes, n: int) -> list[float]:
    return [await post(http, url, body) for _ in range(n)]


async def concurrent(
    http: aiohttp.ClientSession, url: str, body: bytes, n: int, workers: int
) -> tuple[list[float], float]:
    """Latencies with ``workers`` reviews in flight, and reviews per second."""
    results: list[float] = []

    async def worker(count: int) -> None:
        for _ in range(count):
            results.append(await post(http, url, body))

    started = time.perf_counter()
    await asyncio.gather(*(worker(n // workers) for _ in range(workers)))
    return results, len(results) / (time.perf_counter() - started)


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process: unlike latency, barely affected by a busy machine."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100)[q - 1] * 1000


async def measure(kind: str, cert_dir: Path, n: int, workers: int) -> dict[str, float]:
    port = free_port()
    process = spawn(kind, port, cert_dir)
    try:
        context = ssl.create_default_context(cafile=str(cert_dir / "ca.crt"))
        connector = aiohttp.TCPConnector(ssl=context, limit=workers)
        async with aiohttp.ClientSession(connector=connector) as http:
            base = f"https://127.0.0.1:{port}"
            await wait_ready(http, f"{base}/healthz")
            body = review_body()
            url = f"{base}/inject/pod"
            await sequential(http, url, body, max(200, n // 10))  # warm-up
            cpu_before = cpu_seconds(process.pid)  # taskset execs: same pid
            seq = await sequential(http, url, body, n)
            burst, rate = await concurrent(http, url, body, n, workers)
            cpu = cpu_seconds(process.pid) - cpu_before
        return {
            "p50": pct(seq, 50),
            "p90": pct(seq, 90),
            "p99": pct(seq, 99),
            "max": max(seq) * 1000,
            "burst_p50": pct(burst, 50),
            "burst_p99": pct(burst, 99),
            "burst_rps": rate,
            "cpu_us": cpu / (len(seq) + len(burst)) * 1e6,
        }
    finally:
        process.terminate()
        process.wait(timeout=10)


def report(results: dict[str, dict[str, float]], n: int, workers: int, check: bool) -> int:
    print(f"AdmissionReview over HTTPS keep-alive, {n} sequential + {n} with {workers} in flight")
    print(f"{'':24}{'trivial webhook':>18}{'aegis injector':>18}{'difference':>14}")
    rows = [
        ("sequential p50 (ms)", "p50"),
        ("sequential p90 (ms)", "p90"),
        ("sequential p99 (ms)", "p99"),
        ("sequential max (ms)", "max"),
        (f"burst x{workers} p50 (ms)", "burst_p50"),
        (f"burst x{workers} p99 (ms)", "burst_p99"),
        ("burst reviews/s", "burst_rps"),
        ("server CPU/review (us)", "cpu_us"),
    ]
    base, inj = results["baseline"], results["injector"]
    for label, key in rows:
        print(f"{label:24}{base[key]:>18.3f}{inj[key]:>18.3f}{inj[key] - base[key]:>+14.3f}")
    ok = inj["p99"] <= TARGET_P99_MS
    print(f"target: injector sequential p99 <= {TARGET_P99_MS} ms: {'met' if ok else 'MISSED'}")
    return 0 if ok or not check else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="500 requests instead of 3000")
    parser.add_argument("--requests", type=int, default=None)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--no-check", action="store_true")
    parser.add_argument("--serve", choices=("injector", "baseline"), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--cert-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port, args.cert_dir)
        return 0
    n = args.requests or (500 if args.quick else 3000)
    if shutil.which("taskset") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {0})
    with tempfile.TemporaryDirectory(prefix="aegis-bench-") as tmp:
        cert_dir = Path(tmp)
        make_certs(cert_dir)
        results = {
            kind: asyncio.run(measure(kind, cert_dir, n, args.workers))
            for kind in ("baseline", "injector")
        }
    return report(results, n, args.workers, check=not args.no_check)


if __name__ == "__main__":
    sys.exit(main())
