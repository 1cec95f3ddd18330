"""RBAC is enforced: a service-account token authenticates but, without rights, is refused."""

from __future__ import annotations

import time

import pytest

from tests.controlplane.kube import Kube

pytestmark = pytest.mark.kube


def test_service_account_without_rights_is_forbidden(kube: Kube, namespace: str) -> None:
    kube.kubectl("create", "serviceaccount", "nobody", "-n", namespace)
    token = kube.kubectl("create", "token", "nobody", "-n", namespace, "--duration=10m")
    token_value = token.stdout.strip()
    user = f"system:serviceaccount:{namespace}:nobody"
    pods = f"/api/v1/namespaces/{namespace}/pods"

    # The token is valid: the API server knows who is asking ...
    status, review = kube.request(
        "POST",
        "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        token=token_value,
        body={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
    )
    assert status == 201
    assert review["status"]["userInfo"]["username"] == user

    # ... and refuses it (403, not 401) because no role grants anything.
    status, body = kube.request("GET", pods, token=token_value)
    assert status == 403, body
    assert body["reason"] == "Forbidden"
    assert f'User "{user}" cannot list resource "pods"' in body["message"]

    # A garbage token is not authenticated at all.
    status, _ = kube.request("GET", pods, token="not-a-token")
    assert status == 401

    # Granting a Role makes the same token work: the 403 was RBAC, not a blanket deny.
    kube.kubectl("create", "role", "pod-reader", "-n", namespace, "--verb=list", "--resource=pods")
    kube.kubectl(
        "create", "rolebinding", "nobody-reads", "-n", namespace,
        "--role=pod-reader", f"--serviceaccount={namespace}:nobody",
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while (status := kube.request("GET", pods, token=token_value)[0]) != 200:
        assert status == 403
        assert time.monotonic() < deadline, "the RoleBinding never took effect"
        time.sleep(0.1)  # poll interval; the deadline is asserted above
