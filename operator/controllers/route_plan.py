"""What one reconcile of an ``LLMRoute`` should write, decided without I/O.

:func:`prepare` renders the route (with the budgets that apply and its rollout
state); the reconciler then reads what the rendering refers to (the ConfigMap,
the key names of the Secrets); :func:`plan_route` turns both into a
:class:`RoutePlan`: the ConfigMap write, the status patch, the events and the
figures for the metrics. Writes are conditional on the versions read, and each is
planned only when something differs, so a second reconcile plans nothing.

Failure modes keep the last good ConfigMap: an invalid spec or conflicting
budgets leave the sidecars on the previous config (``Ready=False`` says why); a
missing Secret still renders the config (it is valid; pods will not start until
the Secret exists, which the condition says).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from ..api import naming
from ..api.events import Event
from ..api.specs import LLMRouteSpec
from ..api.status import RouteRolloutStatus
from ..kube.conditions import Wanted, conditional_patch, find, status_fields
from ..rollout.state import recorded_state, rollout_state, transition_event
from .render import AppliedBudget, Rendered, RenderError, parse_route_spec, render_route

Body = dict[str, Any]
Outcome = Literal["changed", "unchanged", "invalid"]
_VALID = Wanted("Invalid", "False", "Valid", "the spec is valid")


@dataclass(frozen=True, slots=True)
class Prepared:
    """A route rendered (or why it cannot be) with the rollout state it was rendered with."""

    previous: RouteRolloutStatus | None
    rollout: RouteRolloutStatus | None = None
    rendered: Rendered | None = None
    error: RenderError | None = None

    @property
    def secrets(self) -> tuple[str, ...]:
        """The Secrets the rendered config refers to, each once."""
        uses = self.rendered.secrets if self.rendered is not None else ()
        return tuple(dict.fromkeys(use.secret for use in uses))


@dataclass(frozen=True, slots=True)
class SecretKeys:
    """What reading one Secret found: its key names, no Secret (``keys`` and ``denied``
    both ``None``), or why the API refused the read."""

    keys: frozenset[str] | None = None
    denied: str | None = None


@dataclass(frozen=True, slots=True)
class ConfigMapWrite:
    """Create ``body``, or merge-patch the existing ConfigMap with it."""

    create: bool
    body: Body
    event: Event


@dataclass(frozen=True, slots=True)
class RoutePlan:
    configmap: ConfigMapWrite | None
    #: The status merge patch (conditional on the route's version), ``None``: unchanged.
    status: Body | None
    #: Posted after the status write (a retry after a conflict would post them again).
    events: tuple[Event, ...]
    ready: bool
    outcome: Outcome
    #: The rollout state for the gauges; only when ``rollout_known``.
    rollout: RouteRolloutStatus | None = None
    rollout_known: bool = False


def _wanted_rollout(
    spec: LLMRouteSpec, previous: RouteRolloutStatus | None, now: datetime
) -> RouteRolloutStatus | None:
    """``status.rollout`` as the spec wants it. Without ``spec.rollout`` only a
    ``Promoted`` state stays (the record of the promotion that removed the rollout)."""
    if spec.rollout is not None:
        return rollout_state(spec.rollout, previous, now)
    if previous is not None and previous.phase == "Promoted":
        return previous
    return None


def prepare(route: Body, budgets: Iterable[AppliedBudget], now: datetime) -> Prepared:
    """Render ``route`` with the budgets that may apply in its namespace."""
    meta = route["metadata"]
    previous = recorded_state(route.get("status") or {})
    try:
        spec = parse_route_spec(route.get("spec"))
        state = _wanted_rollout(spec, previous, now)
        rendered = render_route(meta["namespace"], meta["name"], spec, budgets, state)
    except RenderError as error:
        return Prepared(previous, error=error)
    return Prepared(previous, state, rendered)


def _owner_reference(route: Body) -> Body:
    meta = route["metadata"]
    return {
        "apiVersion": naming.API_VERSION,
        "kind": naming.ROUTE_KIND,
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def owned_by(configmap: Body, route_name: str, route_uid: str | None) -> bool:
    """Whether the ConfigMap is ours to change or delete: it names the route as owner,
    or carries our labels (left by an earlier route of this name)."""
    meta = configmap.get("metadata") or {}
    if any(ref.get("uid") == route_uid for ref in meta.get("ownerReferences") or []):
        return True
    labels = meta.get("labels") or {}
    return bool(
        labels.get(naming.MANAGED_BY_LABEL) == naming.MANAGED_BY
        and labels.get(naming.ROUTE_LABEL) == route_name
    )


def _desired_meta(route: Body, rendered: Rendered) -> Body:
    return {
        "labels": {
            naming.MANAGED_BY_LABEL: naming.MANAGED_BY,
            "app.kubernetes.io/part-of": "aegis",
            naming.ROUTE_LABEL: route["metadata"]["name"],
        },
        "annotations": {naming.CONFIG_HASH_ANNOTATION: rendered.hash},
        "ownerReferences": [_owner_reference(route)],
    }


def _configmap_write(
    route: Body, rendered: Rendered, existing: Body | None
) -> ConfigMapWrite | Wanted | None:
    """The write that makes the ConfigMap hold ``rendered``: ``None`` when it already
    does, ``Ready=False`` when the ConfigMap of that name is not ours."""
    meta = route["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    cm_name = naming.configmap_name(name)
    desired = _desired_meta(route, rendered)
    if existing is None:
        body = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": cm_name, "namespace": namespace, **desired},
            "data": {naming.CONFIG_KEY: rendered.text},
        }
        message = f"created ConfigMap {cm_name}, config hash {rendered.hash}"
        return ConfigMapWrite(True, body, Event("Normal", "ConfigRendered", message))
    if not owned_by(existing, name, meta.get("uid")):
        return Wanted(
            "Ready",
            "False",
            "ConfigMapConflict",
            f"ConfigMap {cm_name} exists and is not managed by Aegis "
            f"(no ownerReference to this LLMRoute, no label {naming.MANAGED_BY_LABEL}="
            f"{naming.MANAGED_BY}); delete or rename it",
        )
    old_meta = existing.get("metadata") or {}
    data = existing.get("data") or {}
    labels = old_meta.get("labels") or {}
    annotations = old_meta.get("annotations") or {}
    same = (
        data == {naming.CONFIG_KEY: rendered.text}
        and all(labels.get(k) == v for k, v in desired["labels"].items())
        and all(annotations.get(k) == v for k, v in desired["annotations"].items())
        and (old_meta.get("ownerReferences") or []) == desired["ownerReferences"]
    )
    if same:
        return None
    patch = {
        "metadata": {"resourceVersion": old_meta.get("resourceVersion"), **desired},
        "data": {**dict.fromkeys(data), naming.CONFIG_KEY: rendered.text},
    }
    old_hash = (route.get("status") or {}).get("configHash")
    message = f"updated ConfigMap {cm_name}: {old_hash} -> {rendered.hash}"
    return ConfigMapWrite(False, patch, Event("Normal", "ConfigUpdated", message))


def _secret_problem(
    namespace: str, rendered: Rendered, secrets: Mapping[str, SecretKeys] | None
) -> Wanted | None:
    """``Ready=False`` naming every missing Secret or key, or ``None`` when all exist
    (or when they are not checked: ``secrets`` is ``None``)."""
    if secrets is None:
        return None
    problems: list[tuple[str, str]] = []
    for use in rendered.secrets:
        found = secrets.get(use.secret, SecretKeys())
        where = f"{use.field} (provider {use.provider})"
        if found.denied is not None:
            problems.append(
                (
                    "SecretAccessDenied",
                    f"cannot read Secret {use.secret!r} for {where}: {found.denied}",
                )
            )
        elif found.keys is None:
            problems.append(
                (
                    "SecretNotFound",
                    f"Secret {use.secret!r} referenced by {where} does not exist in "
                    f"namespace {namespace}",
                )
            )
        elif use.key not in found.keys:
            problems.append(
                ("KeyNotFound", f"Secret {use.secret!r} has no key {use.key!r} used by {where}")
            )
    if not problems:
        return None
    return Wanted("Ready", "False", problems[0][0], "; ".join(text for _, text in problems))


def _ready_events(previous: Iterable[Mapping[str, Any]], wanted: Wanted) -> list[Event]:
    """``Ready`` transitions as events: a Warning for each new problem, Normal on recovery."""
    old = find(previous, "Ready")
    if old is not None and (old.get("status"), old.get("reason"), old.get("message")) == (
        wanted.status,
        wanted.reason,
        wanted.message,
    ):
        return []
    if wanted.status == "True":
        if old is None or old.get("status") == "True":
            return []
        return [Event("Normal", "Ready", wanted.message)]
    return [Event("Warning", wanted.reason, wanted.message)]


def _status_patch(
    route: Body, fields: Body, conditions: list[Wanted], now: datetime
) -> Body | None:
    """The conditional status patch that sets ``fields`` and ``conditions``, or ``None``
    when the status already says all of it."""
    wanted, changed = status_fields(route, fields, conditions, now)
    return conditional_patch(route, wanted) if changed else None


def plan_route(
    route: Body,
    prepared: Prepared,
    configmap: Body | None,
    secrets: Mapping[str, SecretKeys] | None,
    now: datetime,
) -> RoutePlan:
    """Everything one reconcile writes, from the route, its rendering and what was read."""
    meta, status = route["metadata"], route.get("status") or {}
    previous_conditions = status.get("conditions") or []
    rendered, error = prepared.rendered, prepared.error
    if rendered is None:
        assert error is not None
        invalid = error.reason == "InvalidSpec"
        ready = Wanted("Ready", "False", error.reason, error.message)
        conditions = [
            ready,
            Wanted("Invalid", "True", error.reason, error.message) if invalid else _VALID,
        ]
        return RoutePlan(
            configmap=None,
            status=_status_patch(route, {}, conditions, now),
            events=tuple(_ready_events(previous_conditions, ready)),
            ready=False,
            outcome="invalid",
        )
    state = prepared.rollout
    fields: Body = {
        "providers": ",".join(p.name for p in rendered.config.providers),
        "budgets": ",".join(b.key for b in rendered.budgets) or None,
        # As the API returns it (no nulls), so that an unchanged state compares equal.
        "rollout": None
        if state is None
        else state.model_dump(mode="json", by_alias=True, exclude_none=True),
    }
    write = _configmap_write(route, rendered, configmap)
    outcome: Outcome
    if isinstance(write, Wanted):
        ready, write, outcome = write, None, "invalid"
    else:
        cm_name = naming.configmap_name(meta["name"])
        fields.update(configMap=cm_name, configHash=rendered.hash)
        ready = _secret_problem(meta["namespace"], rendered, secrets) or Wanted(
            "Ready", "True", "Reconciled", f"ConfigMap {cm_name} holds config {rendered.hash}"
        )
        outcome = "unchanged" if write is None else "changed"
    patch = _status_patch(route, fields, [ready, _VALID], now)
    if patch is not None and state is not None:  # nulls remove fields the state no longer has
        patch["status"]["rollout"] = state.model_dump(mode="json", by_alias=True)
    moved = transition_event(prepared.previous, state)
    events = ([] if moved is None else [moved]) + _ready_events(previous_conditions, ready)
    return RoutePlan(
        configmap=write,
        status=patch,
        events=tuple(events),
        ready=ready.status == "True",
        outcome=outcome,
        rollout=state,
        rollout_known=True,
    )
