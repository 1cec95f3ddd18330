"""Serving certificates at run time: load, hot-swap, share between replicas, publish the CA.

One ``ssl.SSLContext`` serves for the life of the process; a new certificate is
loaded into that same context, which affects new handshakes only (connections in
flight keep theirs), so rotation needs no restart and drops nothing.

Two sources:

- :class:`SecretTls` (default): the CA and serving certificate live in one Secret in
  the injector's namespace. Every replica runs the same pure plan
  (:func:`certs.plan`) and writes with ``resourceVersion`` preconditions, so the
  replicas converge without a leader; then it makes the webhook configuration's
  ``caBundle`` match.
- :class:`FileTls`: ``tls.crt``/``tls.key`` in a directory (a cert-manager Secret
  mounted as a volume); re-read on change; cert-manager's CA injector keeps
  ``caBundle`` current.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import hashlib
import logging
import os
import ssl
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..kube import Conflict, KubeClient, MutatingWebhookConfiguration, Secret
from . import certs

log = logging.getLogger(__name__)


class ServingTls:
    """The server's SSL context and the certificate currently in it."""

    def __init__(self, on_load: Callable[[bytes], None] | None = None) -> None:
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        self.fingerprint: str | None = None
        self.loaded = asyncio.Event()
        self._on_load = on_load

    def load(self, cert_pem: bytes, key_pem: bytes) -> bool:
        """Load a certificate (no-op if unchanged); True when it changed."""
        fingerprint = hashlib.sha256(cert_pem + key_pem).hexdigest()
        if fingerprint == self.fingerprint:
            return False
        # ssl only loads from files: write them privately, load, remove.
        with tempfile.TemporaryDirectory(prefix="aegis-tls-") as tmp:
            cert_path, key_path = Path(tmp, "tls.crt"), Path(tmp, "tls.key")
            cert_path.write_bytes(cert_pem)
            fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(key_pem)
            # A mismatched pair must not half-replace the live certificate: try it first.
            scratch = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            scratch.load_cert_chain(cert_path, key_path)
            self.context.load_cert_chain(cert_path, key_path)
        self.fingerprint = fingerprint
        self.loaded.set()
        if self._on_load is not None:
            self._on_load(cert_pem)
        log.info("serving certificate loaded (serial %x)", certs.serial(cert_pem))
        return True


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class SecretTls:
    """Keeps the shared Secret, this replica's certificate and the caBundle current."""

    def __init__(
        self,
        api: KubeClient,
        serving: ServingTls,
        *,
        namespace: str,
        secret: str,
        policy: certs.Policy,
        webhook_config: str | None,
        interval: float,
        clock: Callable[[], datetime.datetime] = _now,
    ) -> None:
        self._api = api
        self._serving = serving
        self._namespace = namespace
        self._secret = secret
        self._policy = policy
        self._webhook_config = webhook_config
        self._interval = interval
        self._clock = clock
        self.rotations = 0

    async def _store(self, state: certs.TlsState, existing: dict[str, Any] | None) -> bool:
        """Write the planned state; False when another replica won the race (re-read)."""
        body: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "Opaque",
            "metadata": {
                "name": self._secret,
                "namespace": self._namespace,
                "labels": {
                    "app.kubernetes.io/name": "aegis",
                    "app.kubernetes.io/component": "injector",
                },
            },
            "data": state.secret_data(self._clock()),
        }
        if existing is not None:
            meta = existing["metadata"]
            # Keep what others put there (annotations, owner references) and, above
            # all, resourceVersion: a replica that planned from a stale read gets 409.
            body["metadata"] = {
                **{k: v for k, v in meta.items() if k != "managedFields"},
                "labels": {**(meta.get("labels") or {}), **body["metadata"]["labels"]},
            }
            body["type"] = existing.get("type") or "Opaque"  # immutable; a chart may pick tls
        try:
            if existing is None:
                await self._api.create(Secret, body)
            else:
                await self._api.replace(Secret, body)
        except Conflict:
            return False
        return True

    async def sync_once(self) -> certs.TlsState:
        """One round: read, plan, write if needed, load, publish the CA bundle."""
        for _ in range(5):
            existing = await self._api.get(Secret, self._secret, namespace=self._namespace)
            current = certs.TlsState.from_secret_data((existing or {}).get("data"))
            state, reason = certs.plan(current, self._policy, self._clock())
            if not reason:
                break
            if await self._store(state, existing):
                self.rotations += 1
                log.info("TLS Secret %s: %s", self._secret, reason)
                break
        else:
            raise RuntimeError("TLS Secret keeps changing under us; retrying later")
        self._serving.load(state.tls_cert, state.tls_key)
        if self._webhook_config:
            await self.publish_ca_bundle(state.ca_bundle(self._clock()))
        return state

    async def publish_ca_bundle(self, bundle: bytes) -> None:
        """Make every webhook of the configuration trust ``bundle`` (JSONPatch, only if needed)."""
        name = self._webhook_config
        assert name is not None  # only called with a webhook configuration to keep
        config = await self._api.get(MutatingWebhookConfiguration, name)
        if config is None:
            log.warning("MutatingWebhookConfiguration %s not found yet", name)
            return
        wanted = base64.b64encode(bundle).decode()
        ops: list[dict[str, Any]] = []
        for index, hook in enumerate(config.get("webhooks") or []):
            if hook.get("clientConfig", {}).get("caBundle") != wanted:
                ops.append({"op": "test", "path": f"/webhooks/{index}/name", "value": hook["name"]})
                ops.append(
                    {
                        "op": "add",
                        "path": f"/webhooks/{index}/clientConfig/caBundle",
                        "value": wanted,
                    }
                )
        if not ops:
            return
        await self._api.json_patch(MutatingWebhookConfiguration, name, ops)
        log.info("caBundle of %s updated (%d webhooks)", name, len(ops) // 2)

    async def run(self) -> None:
        while True:
            try:
                await self.sync_once()
            except Exception as exc:  # keep serving with the loaded certificate
                log.warning("TLS sync failed: %s", exc)
            await asyncio.sleep(self._interval)


class FileTls:
    """Serve ``tls.crt``/``tls.key`` from a directory, reloading when they change."""

    def __init__(self, serving: ServingTls, directory: Path, interval: float) -> None:
        self._serving = serving
        self._dir = directory
        self._interval = interval

    def sync_once(self) -> None:
        cert = (self._dir / "tls.crt").read_bytes()
        key = (self._dir / "tls.key").read_bytes()
        self._serving.load(cert, key)

    async def run(self) -> None:
        while True:
            try:
                await asyncio.to_thread(self.sync_once)
            except (OSError, ssl.SSLError) as exc:
                log.warning("cannot load certificate from %s: %s", self._dir, exc)
            await asyncio.sleep(self._interval)
