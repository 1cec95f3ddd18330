"""The client's error tree and its one login path, without a cluster."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from aegis.operator.kube import (
    ConfigError,
    Conflict,
    Forbidden,
    Gone,
    Invalid,
    KubeError,
    NotFound,
    Transient,
    credentials,
    load_config,
)
from aegis.operator.kube.errors import error_for


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (403, Forbidden),
        (404, NotFound),
        (409, Conflict),
        (410, Gone),
        (422, Invalid),
        (429, Transient),
        (500, Transient),
        (503, Transient),
        (0, Transient),
        (400, KubeError),
    ],
)
def test_statuses_map_to_one_error_tree(status: int, kind: type[KubeError]) -> None:
    error = error_for(status, "Reason", "message")
    assert type(error) is kind and isinstance(error, KubeError)
    assert (error.status, error.reason, error.message) == (status, "Reason", "message")


def kubeconfig(tmp_path: Path, user: dict[str, str]) -> Path:
    ca = base64.b64encode(b"-----BEGIN CERTIFICATE-----\n").decode()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "c", "cluster": {"server": "https://k:6443", "certificate-authority-data": ca}}
        ],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u", "namespace": "ns"}}],
        "current-context": "x",
    }
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps(config))
    return path


async def test_kopf_logs_in_with_the_clients_token(tmp_path: Path) -> None:
    found = await credentials(load_config(kubeconfig(tmp_path, {"token": "t0ken"})))
    assert (found.server, found.scheme, found.token) == ("https://k:6443", "Bearer", "t0ken")
    assert found.ca_data is not None and found.default_namespace == "ns"


async def test_a_token_file_is_read_when_kopf_logs_in(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("first\n")
    config = load_config(kubeconfig(tmp_path, {"tokenFile": str(tmp_path / "token")}))
    assert (await credentials(config)).token == "first"


async def test_client_certificates_are_passed_on_as_given(tmp_path: Path) -> None:
    user = {"client-certificate": "certs/me.crt", "client-key-data": "a2V5"}
    found = await credentials(load_config(kubeconfig(tmp_path, user)))
    assert found.certificate_path == str(tmp_path / "certs" / "me.crt")  # relative to the file
    assert found.private_key_data == "a2V5" and found.token is None


def test_a_missing_kubeconfig_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        load_config(tmp_path / "absent")
