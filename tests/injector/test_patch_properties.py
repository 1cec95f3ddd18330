"""Property: the injection patch is idempotent, keeps everything the user wrote, and the
result is a pod the API server accepts.

Hypothesis draws opted-in pods (containers with env, ports and mounts, init
containers, volumes, annotations with characters JSON Pointer must escape) and
injects them as the webhook does (:func:`decide`, native sidecars or not). For every
pod that is injected:

- a second admission of the result changes nothing (``already-injected``);
- every label, annotation, container, init container, volume and env entry of the
  user is still there with its value, in its order (the user's env wins);
- with the API server: a server-side dry run of the result is accepted.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aegis.operator.api.naming import INJECT_LABEL
from aegis.operator.injector.admission import PodRequest, decide
from tests.controlplane.kube import Kube
from tests.injector.helpers import SIDECAR, apply, route

ROUTES = [route("rag", "team", {"matchLabels": {"app": "web"}})]
APP_ENV = ("OPENAI_BASE_URL", "AEGIS_URL", "OPENAI_API_KEY", "ANTHROPIC_API_KEY")

names = st.from_regex(r"\A[a-z][a-z0-9]{0,8}\Z")
values = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=12)
# Keys with "/" (escaped as ~1 in a JSON Pointer), dots, dashes and underscores.
annotation_keys = st.sampled_from(["note", "team/owner", "x.io/y", "a.b-c/d_e", "plain"])
env_names = st.one_of(st.sampled_from(APP_ENV), st.from_regex(r"\A[A-Z][A-Z0-9_]{0,8}\Z"))


@st.composite
def containers(draw: st.DrawFn, prefix: str) -> list[dict[str, Any]]:
    listed = []
    for name in draw(st.lists(names, min_size=1, max_size=3, unique=True)):
        container: dict[str, Any] = {"name": f"{prefix}{name}", "image": "registry.invalid/app:1"}
        env = draw(st.dictionaries(env_names, values, max_size=4))
        if env:
            container["env"] = [{"name": k, "value": v} for k, v in env.items()]
        ports = draw(st.lists(st.integers(1024, 9000), max_size=2, unique=True))
        free = [p for p in ports if p not in (SIDECAR.port, SIDECAR.metrics_port)]
        if free:
            container["ports"] = [{"containerPort": p} for p in free]
        listed.append(container)
    return listed


@st.composite
def pods(draw: st.DrawFn) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "name": "web",
        "labels": {**draw(st.dictionaries(names, names)), "app": "web", INJECT_LABEL: "true"},
    }
    annotations = draw(st.dictionaries(annotation_keys, values, max_size=3))
    empty_allowed = draw(st.booleans())
    if annotations or empty_allowed:
        metadata["annotations"] = annotations
    spec: dict[str, Any] = {"containers": draw(containers("app-"))}
    if draw(st.booleans()):
        spec["initContainers"] = draw(containers("init-"))
    volumes = draw(st.lists(names, max_size=2, unique=True))
    if volumes:
        spec["volumes"] = [{"name": f"vol-{v}", "emptyDir": {}} for v in volumes]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}


def admit(pod: dict[str, Any], native: bool) -> tuple[str, str, dict[str, Any]]:
    request = PodRequest("team", "CREATE", "Pod", "", pod)
    decision = decide(
        request, "pod", ROUTES, SIDECAR, native=native, version="1.2.3", never_injected=frozenset()
    )
    return decision.outcome, decision.reason, apply(pod, decision.patch)


def injected(pod: dict[str, Any], native: bool) -> dict[str, Any]:
    outcome, reason, result = admit(pod, native)
    assert (outcome, reason) == ("injected", "injected")
    return result


def assert_kept(before: dict[str, Any], after: dict[str, Any]) -> None:
    """Everything the user wrote is in ``after``, unchanged and in order."""
    for part in ("labels", "annotations"):
        mine = before["metadata"].get(part) or {}
        assert mine.items() <= (after["metadata"].get(part) or {}).items(), part
    for kind in ("containers", "initContainers"):
        ours = [c for c in after["spec"].get(kind, []) if c["name"] != SIDECAR.container_name]
        theirs = before["spec"].get(kind, [])
        assert [c["name"] for c in ours] == [c["name"] for c in theirs], kind
        for mine, now in zip(theirs, ours, strict=True):
            for key, value in mine.items():
                if key == "env":  # kept in order, ours only appended, never shadowing
                    assert now["env"][: len(value)] == value
                    listed = [e["name"] for e in now["env"]]
                    assert len(listed) == len(set(listed)), listed
                else:
                    assert now[key] == value, (kind, key)
    volumes = after["spec"].get("volumes", [])
    assert volumes[: len(before["spec"].get("volumes", []))] == before["spec"].get("volumes", [])


@settings(max_examples=400, deadline=None)
@given(pod=pods(), native=st.booleans())
def test_injection_is_idempotent_and_keeps_what_the_user_wrote(
    pod: dict[str, Any], native: bool
) -> None:
    result = injected(pod, native)
    assert_kept(pod, result)
    again = admit(result, native)
    assert again[:2] == ("skipped", "already-injected")
    assert again[2] == result  # no patch the second time


@pytest.mark.slow
@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(pod=pods(), native=st.booleans())
def test_the_injected_pod_passes_the_api_servers_validation(
    kube: Kube, namespace: str, pod: dict[str, Any], native: bool
) -> None:
    result = injected(pod, native)
    done = kube.kubectl(
        "create", "-n", namespace, "--dry-run=server", "-o", "json", "-f", "-",
        input=json.dumps(result), check=False,
    )  # fmt: skip
    assert done.returncode == 0, (done.stderr, result)
    accepted = json.loads(done.stdout)
    assert [c["name"] for c in accepted["spec"]["containers"]] == [
        c["name"] for c in result["spec"]["containers"]
    ]
