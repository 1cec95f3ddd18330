"""A small async Kubernetes API client on aiohttp, with kopf's credentials.

Why not the official ``kubernetes`` package: it is synchronous, so every call
would need ``asyncio.to_thread`` (a thread per in-flight request, a second
connection pool, and its untyped models everywhere). ``kubernetes_asyncio`` would
be one more large dependency for the six verbs we use. kopf already talks to the
API with aiohttp; this client does the same with the same login function kopf
uses by default (:func:`kopf.login_via_client`: in-cluster service account or
kubeconfig, including exec and auth-provider plugins), and logs in again once
when the API answers 401 (service-account tokens rotate).

Bodies are plain dicts. Nothing here logs a response body: Secret reads return
``data`` to the caller, which only looks at key names.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import quote

import aiohttp
import kopf

log = logging.getLogger("aegis.operator.kube.client")

Body = dict[str, Any]
Login = Callable[[], Awaitable[kopf.ConnectionInfo]]
MERGE_PATCH = "application/merge-patch+json"
_TIMEOUT = aiohttp.ClientTimeout(total=30, connect=10)


class KubeError(Exception):
    """The API refused a request; ``status`` and ``reason`` as in its ``Status`` object."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message

    @property
    def transient(self) -> bool:
        return self.status == 429 or self.status >= 500


async def default_login() -> kopf.ConnectionInfo:
    """The credentials kopf itself would use (its default login handler)."""

    def login() -> kopf.ConnectionInfo:
        info = kopf.login_via_client(logger=log, settings=kopf.OperatorSettings())
        if info is None:  # only when the kubernetes package is missing
            raise kopf.LoginError("no Kubernetes credentials found")
        return info

    return await asyncio.to_thread(login)  # reads files; keep the loop free


def path(
    group: str,
    version: str,
    plural: str,
    *,
    namespace: str | None = None,
    name: str | None = None,
    subresource: str | None = None,
) -> str:
    """The REST path of a collection or object (``group=''`` for the core API)."""
    base = f"/apis/{group}/{version}" if group else f"/api/{version}"
    if namespace is not None:
        base += f"/namespaces/{quote(namespace, safe='')}"
    base += f"/{plural}"
    if name is not None:
        base += f"/{quote(name, safe='')}"
    if subresource is not None:
        base += f"/{subresource}"
    return base


class KubeClient:
    """One aiohttp session to the API server; re-logs in on 401."""

    def __init__(self, login: Login = default_login, user_agent: str = "aegis-operator") -> None:
        self._login = login
        self._user_agent = user_agent
        self._session: aiohttp.ClientSession | None = None
        # Sessions replaced after a 401 may still carry requests: closed at close().
        self._retired: list[aiohttp.ClientSession] = []
        self._server = ""
        self._lock = asyncio.Lock()

    async def _connect(self, stale: aiohttp.ClientSession | None = None) -> aiohttp.ClientSession:
        async with self._lock:
            if self._session is not None and self._session is not stale:
                return self._session  # another task logged in meanwhile
            if self._session is not None:
                self._retired.append(self._session)
            info = await self._login()
            self._server = info.server.rstrip("/")
            headers = {**info.as_http_headers(), "User-Agent": self._user_agent}
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=info.as_ssl_context()),
                headers=headers,
                timeout=_TIMEOUT,
                proxy=info.proxy_url,
                trust_env=info.trust_env,
            )
            return self._session

    async def close(self) -> None:
        async with self._lock:
            for session in [*self._retired, self._session]:
                if session is not None:
                    await session.close()
            self._retired.clear()
            self._session = None

    async def request(
        self,
        method: str,
        url_path: str,
        *,
        body: Mapping[str, Any] | None = None,
        content_type: str = "application/json",
        params: Mapping[str, str] | None = None,
    ) -> Body:
        """Send one request; the decoded body on 2xx, else :class:`KubeError`."""
        session = self._session or await self._connect()
        for attempt in (1, 2):
            headers = {"Accept": "application/json"}
            data = None
            if body is not None:
                headers["Content-Type"] = content_type
                data = json.dumps(body)
            async with session.request(
                method, self._server + url_path, data=data, headers=headers, params=params
            ) as response:
                if response.status == 401 and attempt == 1:
                    session = await self._connect(stale=session)
                    continue
                payload = await response.read()
                if response.status < 300:
                    decoded: Body = json.loads(payload) if payload else {}
                    return decoded
                raise _error(response.status, payload)
        raise AssertionError("unreachable")  # pragma: no cover

    async def get(self, url_path: str) -> Body | None:
        """The object, or ``None`` when it does not exist."""
        try:
            return await self.request("GET", url_path)
        except KubeError as error:
            if error.status == 404:
                return None
            raise

    async def create(self, url_path: str, body: Mapping[str, Any]) -> Body:
        return await self.request("POST", url_path, body=body)

    async def merge_patch(self, url_path: str, body: Mapping[str, Any]) -> Body:
        """JSON merge patch; put ``metadata.resourceVersion`` in ``body`` to make it
        conditional (409 Conflict when the object changed since it was read)."""
        return await self.request("PATCH", url_path, body=body, content_type=MERGE_PATCH)

    async def delete(self, url_path: str, *, uid: str | None = None) -> bool:
        """Delete; ``uid`` guards against deleting a newer object of the same name.
        ``False`` when it was already gone."""
        body: Body = {"kind": "DeleteOptions", "apiVersion": "v1"}
        if uid is not None:
            body["preconditions"] = {"uid": uid}
        try:
            await self.request("DELETE", url_path, body=body)
        except KubeError as error:
            if error.status == 404:
                return False
            raise
        return True


def _error(status: int, payload: bytes) -> KubeError:
    try:
        decoded = json.loads(payload)
    except ValueError:
        decoded = None
    if isinstance(decoded, dict) and decoded.get("kind") == "Status":
        return KubeError(status, str(decoded.get("reason", "")), str(decoded.get("message", "")))
    return KubeError(status, "", payload[:200].decode(errors="replace"))
