"""A small async Kubernetes API client: JSON requests and watch streams over aiohttp.

Credentials come from the official ``kubernetes`` package's loaders (in-cluster
service account with token refresh, or a kubeconfig with certificates, tokens and
exec plugins), so nothing about authentication is re-implemented; only the I/O is
done here, on the event loop, instead of in the sync client's threads.
"""

from __future__ import annotations

import json
import logging
import ssl
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp

log = logging.getLogger("aegis.injector.kube")

_MAX_OBJECT_BYTES = 8 * 1024 * 1024
"""A watch event is one JSON line; an object can approach etcd's 1.5 MiB limit."""


class ApiError(Exception):
    def __init__(self, status: int, body: Any, what: str) -> None:
        message = body.get("message") if isinstance(body, Mapping) else str(body)[:300]
        super().__init__(f"{what}: HTTP {status}: {message}")
        self.status = status
        self.body = body


class TokenSource(Protocol):
    def __call__(self) -> str | None: ...


@dataclass(frozen=True)
class Connection:
    """Where the API server is and how to authenticate (``authorization`` header)."""

    server: str
    ssl_context: ssl.SSLContext | bool
    authorization: TokenSource


def load_connection(kubeconfig: str | None) -> Connection:
    """In-cluster credentials, else the kubeconfig (``--kubeconfig``/``$KUBECONFIG``)."""
    from kubernetes import client, config  # heavy import: only when the server starts

    cfg = client.Configuration()
    if kubeconfig:
        config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)  # type: ignore[no-untyped-call]
    else:
        try:
            config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
        except config.ConfigException:
            config.load_kube_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
    context: ssl.SSLContext | bool = False  # False: aiohttp skips verification
    if cfg.verify_ssl:
        context = ssl.create_default_context(cafile=cfg.ssl_ca_cert)
    if cfg.cert_file and isinstance(context, ssl.SSLContext):
        context.load_cert_chain(cfg.cert_file, cfg.key_file)

    def authorization() -> str | None:
        # Calls the refresh hook of in-cluster configs: bound tokens are rotated on disk.
        # The key is "BearerToken" in current clients, "authorization" in older ones.
        value: str | None = cfg.get_api_key_with_prefix("BearerToken", alias="authorization")
        return value

    return Connection(cfg.host.rstrip("/"), context, authorization)


class KubeApi:
    """JSON over HTTPS to one API server; one pooled session, closed by :meth:`close`."""

    def __init__(self, connection: Connection) -> None:
        self._conn = connection
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._conn.ssl_context, limit=8),
                # readline() accepts lines up to twice the buffer size.
                read_bufsize=_MAX_OBJECT_BYTES // 2,
            )
        return self._session

    def _headers(self, content_type: str | None = None) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": "aegis-injector"}
        token = self._conn.authorization()
        if token:
            headers["Authorization"] = token
        if content_type:
            headers["Content-Type"] = content_type
        return headers

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        content_type: str = "application/json",
        params: Mapping[str, str] | None = None,
        deadline: float = 10.0,
    ) -> tuple[int, Any]:
        """``(status, decoded body)``; never raises for HTTP error statuses."""
        data = None if body is None else json.dumps(body).encode()
        async with self._http().request(
            method,
            self._conn.server + path,
            data=data,
            params=params,
            headers=self._headers(content_type if data is not None else None),
            timeout=aiohttp.ClientTimeout(total=deadline),
        ) as response:
            raw = await response.read()
        try:
            decoded = json.loads(raw) if raw else None
        except ValueError:
            decoded = raw.decode(errors="replace")
        return response.status, decoded

    async def get(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        """GET a JSON object; raises :class:`ApiError` for any non-2xx answer."""
        status, body = await self.request("GET", path, params=params)
        if not 200 <= status < 300:
            raise ApiError(status, body, f"GET {path}")
        return body

    async def watch(
        self, path: str, resource_version: str, timeout_seconds: int = 300
    ) -> AsyncIterator[dict[str, Any]]:
        """The events of one watch request (``ADDED``/``MODIFIED``/``DELETED``/``BOOKMARK``/
        ``ERROR``) until the server ends it; the caller re-lists on ``ERROR`` 410."""
        params = {
            "watch": "1",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(timeout_seconds),
        }
        async with self._http().get(
            self._conn.server + path,
            params=params,
            headers=self._headers(),
            timeout=aiohttp.ClientTimeout(
                total=None, sock_connect=10, sock_read=timeout_seconds + 30
            ),
        ) as response:
            if response.status != 200:
                raise ApiError(response.status, await response.text(), f"WATCH {path}")
            while line := await response.content.readline():
                if line.strip():
                    event: dict[str, Any] = json.loads(line)
                    yield event

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
