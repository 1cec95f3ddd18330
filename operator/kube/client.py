"""The Kubernetes API client of the operator, the rollout controller and the injector.

A thin layer over one ``lightkube.AsyncClient``: bodies in and out are plain
dicts (what kopf hands to handlers and what the controllers compare), every
error is one of :mod:`.errors`, and the two requests lightkube has no verb for
(a delete with a ``uid`` precondition, ``GET /version``) go over the same
connection pool. Nothing here logs a body: Secret values never leave
:meth:`KubeClient.get` of the injector's own TLS Secret, and
:meth:`KubeClient.secret_keys` returns key names only.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Any, cast

import httpx2
from lightkube import ALL_NS, ApiError, AsyncClient, SingleConfig
from lightkube.config.client_adapter import user_auth, verify_cluster
from lightkube.core.dictmixin import DictMixin
from lightkube.core.resource import api_info
from lightkube.types import PatchType

from .errors import NotFound, translated
from .resources import Kind, Secret

Body = dict[str, Any]

ALL_NAMESPACES = ALL_NS


def _body(obj: object) -> Body:
    """A library object as the plain dict the API sent."""
    if isinstance(obj, DictMixin):
        return obj.to_dict()
    if isinstance(obj, dict):
        return dict(obj)
    raise TypeError(f"not a Kubernetes object: {type(obj).__name__}")


def _instance(kind: Kind, body: Mapping[str, Any]) -> Any:
    """``body`` as an object of ``kind`` (generic kinds are dicts already)."""
    if issubclass(kind, dict):
        return kind(body)
    return cast(type[DictMixin], kind).from_dict(dict(body))


def _any(kind: Kind) -> type[Any]:
    """``kind`` for lightkube's overloads, which tell namespaced from global kinds by
    type; ours are chosen at run time (and checked there by lightkube)."""
    return kind


def _path(kind: Kind, name: str, namespace: str | None) -> str:
    info = api_info(kind)
    group, version = info.resource.group, info.resource.version
    path = f"/apis/{group}/{version}" if group else f"/api/{version}"
    if namespace is not None:
        path += f"/namespaces/{namespace}"
    return f"{path}/{info.plural}/{name}"


class KubeClient:
    """One API server session: in-cluster or kubeconfig credentials (:mod:`.config`)."""

    def __init__(self, config: SingleConfig, *, agent: str, timeout: float = 30.0) -> None:
        self.config = config
        limit = httpx2.Timeout(timeout, connect=10.0)
        # One pool for both clients; its TLS context carries the CA and client certificate.
        assert config.user is not None  # load_config guarantees a user
        verify = verify_cluster(config.cluster, config.user, config.abs_file, trust_env=False)
        transport = httpx2.AsyncHTTPTransport(verify=verify, trust_env=False)
        # The field manager names our writes in managedFields (as the user agent did).
        self._api = AsyncClient(
            config, timeout=limit, field_manager=agent, trust_env=False, transport=transport
        )
        self._raw = httpx2.AsyncClient(
            base_url=config.cluster.server,
            auth=user_auth(config.user),
            headers={"User-Agent": agent, "Accept": "application/json"},
            timeout=limit,
            transport=transport,
            trust_env=False,
        )

    async def close(self) -> None:
        await self._api.close()
        await self._raw.aclose()

    # -- reads -------------------------------------------------------------------------------
    async def get(self, kind: Kind, name: str, *, namespace: str | None = None) -> Body | None:
        """The object, or ``None`` when it does not exist."""
        try:
            with translated():
                return _body(await self._api.get(_any(kind), name, namespace=namespace))
        except NotFound:
            return None

    async def list(self, kind: Kind, *, namespace: str = ALL_NAMESPACES) -> tuple[list[Body], str]:
        """Every object of ``kind`` (in ``namespace``) and the list's resource version,
        from which a watch continues."""
        with translated():
            found = self._api.list(_any(kind), namespace=namespace)
            items = [_body(obj) async for obj in found]
            return items, found.resourceVersion

    async def watch(
        self, kind: Kind, *, since: str, server_timeout: int, namespace: str = ALL_NAMESPACES
    ) -> AsyncGenerator[tuple[str, Body], None]:
        """``(ADDED|MODIFIED|DELETED, object)`` after resource version ``since``; each
        server-side watch lasts ``server_timeout`` s and is renewed from the last version seen.
        A compacted version raises :class:`~.errors.Gone`: list again."""
        with translated():
            stream = self._api.watch(
                _any(kind),
                namespace=namespace,
                resource_version=since,
                server_timeout=server_timeout,
            )
            async for event, obj in stream:
                yield event, _body(obj)

    async def secret_keys(self, name: str, *, namespace: str) -> frozenset[str] | None:
        """The key names of a Secret (``None``: no such Secret); the values are dropped
        at once and never returned."""
        try:
            with translated():
                secret = await self._api.get(Secret, name, namespace=namespace)
        except NotFound:
            return None
        return frozenset(secret.data or ())

    async def server_version(self) -> Body:
        """``GET /version``: the API server's build (``gitVersion``, ``minor``, ...)."""
        return await self._send("GET", "/version")

    # -- writes ------------------------------------------------------------------------------
    async def create(self, kind: Kind, body: Mapping[str, Any]) -> Body:
        """Create the object; :class:`~.errors.Conflict` when it already exists."""
        with translated():
            return _body(await self._api.create(_instance(kind, body)))

    async def replace(self, kind: Kind, body: Mapping[str, Any]) -> Body:
        """Replace the object (PUT); with ``metadata.resourceVersion`` set it is
        conditional: :class:`~.errors.Conflict` when the object changed since."""
        with translated():
            return _body(await self._api.replace(_instance(kind, body)))

    async def merge_patch(
        self,
        kind: Kind,
        name: str,
        patch: Mapping[str, Any],
        *,
        namespace: str | None = None,
        status: bool = False,
    ) -> Body:
        """JSON merge patch of the object, or of its ``status`` subresource. Put
        ``metadata.resourceVersion`` in ``patch`` to make it conditional
        (:class:`~.errors.Conflict` when the object changed since it was read)."""
        target: Kind | None = getattr(kind, "Status", None) if status else kind
        if target is None:
            raise TypeError(f"{kind.__name__} has no status subresource")
        with translated():
            found = await self._api.patch(
                _any(target), name, dict(patch), namespace=namespace, patch_type=PatchType.MERGE
            )
        return _body(found)

    async def json_patch(
        self,
        kind: Kind,
        name: str,
        operations: Sequence[Mapping[str, Any]],
        *,
        namespace: str | None = None,
    ) -> Body:
        """RFC 6902 JSON patch; a failed ``test`` operation is refused (422)."""
        ops = [dict(op) for op in operations]
        with translated():
            found = await self._api.patch(
                _any(kind), name, ops, namespace=namespace, patch_type=PatchType.JSON
            )
        return _body(found)

    async def delete(
        self, kind: Kind, name: str, *, namespace: str | None = None, uid: str | None = None
    ) -> bool:
        """Delete; ``uid`` guards against deleting a newer object of the same name.
        ``False`` when it was already gone."""
        options: Body = {"kind": "DeleteOptions", "apiVersion": "v1"}
        if uid is not None:
            options["preconditions"] = {"uid": uid}
        try:
            await self._send("DELETE", _path(kind, name, namespace), options)
        except NotFound:
            return False
        return True

    async def _send(self, method: str, path: str, body: Body | None = None) -> Body:
        """A request lightkube has no verb for, over the same pool and credentials."""
        with translated():
            response = await self._raw.request(method, path, json=body)
            json_answer = response.headers.get("Content-Type", "").startswith("application/json")
            if response.is_error and json_answer:
                raise ApiError(request=response.request, response=response)
            response.raise_for_status()
            decoded: Body = response.json() if json_answer else {}
            return decoded
