"""`Kube`: what a test gets from the `kube` fixture, for the local or an existing cluster.

The handle wraps kubectl and helm with the right kubeconfig (and a private helm home,
so tests never read or write the developer's helm config), and carries a CA that
tests use to sign webhook serving certificates. On the local control plane that CA
is the cluster CA; on an existing cluster (``AEGIS_TEST_KUBECONFIG``) it is a fresh
CA, which is all a webhook's ``caBundle`` needs.
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import subprocess
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from tests.controlplane.apiserver import ControlPlane
from tests.controlplane.pki import CertificateAuthority


class CommandError(subprocess.CalledProcessError):
    """A failed kubectl/helm call whose message includes what the tool printed."""

    def __str__(self) -> str:
        return (
            f"{' '.join(map(str, self.cmd))} exited with {self.returncode}\n"
            f"stdout: {self.stdout}\nstderr: {self.stderr}"
        )


def run_tool(
    argv: list[str],
    *,
    env: dict[str, str] | None = None,
    input: str | None = None,
    check: bool = True,
    timeout: float = 120.0,
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        argv, input=input, capture_output=True, text=True, env=env, timeout=timeout, check=False
    )
    if check and done.returncode != 0:
        raise CommandError(done.returncode, argv, done.stdout, done.stderr)
    return done


@dataclass
class Kube:
    """A Kubernetes API to test against, with admin credentials in `kubeconfig`."""

    kubeconfig: Path
    server: str
    version: str
    ca: CertificateAuthority
    ca_cert_path: Path
    ca_key_path: Path
    workdir: Path
    kubectl_bin: str = "kubectl"
    helm_bin: str = "helm"
    #: Address at which the API server reaches webhook servers started by the tests.
    webhook_host: str = "127.0.0.1"
    #: True when running against an existing cluster from AEGIS_TEST_KUBECONFIG.
    external: bool = False
    _env: dict[str, str] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        helm_home = self.workdir / "helm-home"
        self._env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            # kubectl's discovery cache, per session rather than under ~/.kube/cache.
            "KUBECACHEDIR": str(self.workdir / "kube-cache"),
            "HELM_CACHE_HOME": str(helm_home / "cache"),
            "HELM_CONFIG_HOME": str(helm_home / "config"),
            "HELM_DATA_HOME": str(helm_home / "data"),
        }

    @property
    def _cache_flag(self) -> list[str]:
        # The flag as well as KUBECACHEDIR: older kubectl (e.g. 1.32) ignores the variable.
        return [f"--cache-dir={self._env['KUBECACHEDIR']}"]

    @property
    def env(self) -> dict[str, str]:
        """Environment for subprocesses (an operator under test): KUBECONFIG, caches, helm."""
        return dict(self._env)

    @property
    def ca_cert_pem(self) -> bytes:
        return self.ca.cert_pem

    @property
    def ca_bundle(self) -> str:
        """The CA in the base64 form a webhook configuration's `caBundle` wants."""
        return base64.b64encode(self.ca.cert_pem).decode()

    @cached_property
    def server_ca_pem(self) -> bytes:
        """The CA that signed the API server's certificate (to verify it directly)."""
        config = self.kubectl_json("config", "view", "--raw", "--minify")
        cluster = config["clusters"][0]["cluster"]
        if "certificate-authority-data" in cluster:
            return base64.b64decode(cluster["certificate-authority-data"])
        return Path(cluster["certificate-authority"]).read_bytes()

    # -- tools -------------------------------------------------------------------------
    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60.0
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl as the admin user; raises CommandError (with stderr) when `check`."""
        argv = [self.kubectl_bin, f"--kubeconfig={self.kubeconfig}", *self._cache_flag, *args]
        return run_tool(argv, env=self._env, input=input, check=check, timeout=timeout)

    def kubectl_json(self, *args: str, input: str | None = None) -> Any:
        """kubectl with `-o json`, decoded."""
        return json.loads(self.kubectl(*args, "-o", "json", input=input).stdout)

    def apply(self, manifest: str | dict[str, Any], namespace: str | None = None) -> Any:
        """`kubectl apply` a YAML/JSON manifest (or an object); returns the applied object."""
        text = manifest if isinstance(manifest, str) else json.dumps(manifest)
        ns = ["-n", namespace] if namespace else []
        return self.kubectl_json("apply", *ns, "-f", "-", input=text)

    def helm(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 180.0
    ) -> subprocess.CompletedProcess[str]:
        """Run helm against this cluster with a private helm home."""
        argv = [self.helm_bin, f"--kubeconfig={self.kubeconfig}", *args]
        return run_tool(argv, env=self._env, input=input, check=check, timeout=timeout)

    # -- namespaces --------------------------------------------------------------------
    def create_namespace(self, prefix: str = "t") -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        self.kubectl("create", "namespace", name)
        return name

    def delete_namespace(self, name: str) -> None:
        """Request deletion without waiting: with no namespace controller (local control
        plane) a deleted namespace stays Terminating forever."""
        self.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found")

    # -- raw HTTP as another identity -----------------------------------------------------
    def request(
        self, method: str, path: str, *, token: str | None = None, body: Any = None
    ) -> tuple[int, Any]:
        """Call the API server directly, as the bearer of `token` (anonymous if None).

        Returns (HTTP status, decoded JSON body) for success and error statuses alike.
        """
        context = ssl.create_default_context(cadata=self.server_ca_pem.decode())
        headers = {"Accept": "application/json"}
        data = None
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        if body is not None:
            headers["Content-Type"] = "application/json"
            data = json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self.server}{path}", data=data, headers=headers, method=method
        )
        try:
            with urllib.request.urlopen(request, timeout=30, context=context) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            payload = error.read()
            try:
                return error.code, json.loads(payload)
            except ValueError:
                return error.code, payload.decode(errors="replace")


def _with_server_version(kube: Kube) -> Kube:
    kube.version = kube.kubectl_json("version")["serverVersion"]["gitVersion"]
    return kube


def for_control_plane(plane: ControlPlane) -> Kube:
    """The handle for a running local control plane, using the kubectl/helm built with it."""
    return _with_server_version(
        Kube(
            kubeconfig=plane.kubeconfig,
            server=plane.server,
            version="",
            ca=plane.ca,
            ca_cert_path=plane.ca_cert_path,
            ca_key_path=plane.ca_key_path,
            workdir=plane.workdir,
            kubectl_bin=str(plane.testbin.kubectl),
            helm_bin=str(plane.testbin.helm),
        )
    )


def for_existing_cluster(kubeconfig: Path, workdir: Path, kubectl_bin: str, helm_bin: str) -> Kube:
    """The handle for a cluster we did not start (kind, ...), with a fresh webhook CA."""
    ca = CertificateAuthority.create("aegis-test-webhook-ca")
    ca_cert_path, ca_key_path = ca.write(workdir / "pki", "ca")
    kube = Kube(
        kubeconfig=kubeconfig,
        server="",
        version="",
        ca=ca,
        ca_cert_path=ca_cert_path,
        ca_key_path=ca_key_path,
        workdir=workdir,
        kubectl_bin=kubectl_bin,
        helm_bin=helm_bin,
        webhook_host=os.environ.get("AEGIS_TEST_WEBHOOK_HOST", "127.0.0.1"),
        external=True,
    )
    view = kube.kubectl_json("config", "view", "--minify")
    kube.server = view["clusters"][0]["cluster"]["server"]
    return _with_server_version(kube)
