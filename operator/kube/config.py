"""One login path: where the API server is and who we are to it.

:func:`load_config` finds the credentials the way ``kubectl`` does: the pod's
service account (its token is re-read when the API answers 401, as the kubelet
rotates it), else the kubeconfig (``--kubeconfig``, ``$KUBECONFIG``,
``~/.kube/config``) with client certificates, a token, a token file or an exec
plugin. :func:`credentials` turns the same configuration into the fields of
``kopf.ConnectionInfo``, so kopf's own API session logs in exactly as our client
does.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import httpx2
from lightkube import ConfigError, KubeConfig, SingleConfig

__all__ = ["ConfigError", "Credentials", "authorization", "credentials", "load_config"]
from lightkube.config.client_adapter import user_auth

Path = str | os.PathLike[str]


def load_config(kubeconfig: Path | None = None) -> SingleConfig:
    """``kubeconfig`` if given, else the in-cluster service account, else
    ``$KUBECONFIG`` or ``~/.kube/config`` (its current context)."""
    try:
        found = KubeConfig.from_file(kubeconfig) if kubeconfig else KubeConfig.from_env()
        config = found.get()
    except (OSError, KeyError, ValueError) as error:  # unreadable or malformed
        raise ConfigError(f"cannot load the Kubernetes configuration: {error}") from error
    if config is None or config.user is None:
        raise ConfigError("the Kubernetes configuration names no user")
    return config


@dataclass(frozen=True, slots=True)
class Credentials:
    """The connection as ``kopf.ConnectionInfo`` takes it (same field names)."""

    server: str
    ca_path: str | None = None
    ca_data: str | None = None
    insecure: bool | None = None
    scheme: str | None = None
    token: str | None = None
    certificate_path: str | None = None
    certificate_data: str | None = None
    private_key_path: str | None = None
    private_key_data: str | None = None
    default_namespace: str | None = None


async def authorization(config: SingleConfig) -> str | None:
    """The ``Authorization`` header our client sends now (runs an exec plugin or
    reads a token file if the configuration says so)."""
    auth = user_auth(config.user)
    if auth is None:
        return None
    flow = auth.async_auth_flow(httpx2.Request("GET", config.cluster.server))
    try:
        request = await anext(flow)
    finally:
        await flow.aclose()
    return request.headers.get("Authorization")


def _file(config: SingleConfig, name: str | None) -> str | None:
    return None if name is None else os.fspath(config.abs_file(name))


async def credentials(config: SingleConfig) -> Credentials:
    """``config`` as kopf logs in with it."""
    cluster, user = config.cluster, config.user
    assert user is not None  # load_config guarantees a user
    scheme = token = None
    header = await authorization(config)
    if header:
        scheme, _, token = header.partition(" ")
    return Credentials(
        server=cluster.server,
        ca_path=_file(config, cluster.certificate_auth),
        ca_data=cluster.certificate_auth_data,
        insecure=cluster.insecure or None,
        scheme=scheme,
        token=token or None,
        certificate_path=_file(config, user.client_cert),
        certificate_data=user.client_cert_data,
        private_key_path=_file(config, user.client_key),
        private_key_data=user.client_key_data,
        default_namespace=config.context.namespace,
    )
