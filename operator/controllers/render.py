"""``LLMRoute`` (+ the ``LLMBudget`` objects that apply) → the sidecar's ``config.yaml``.

Pure functions, no I/O: the reconciler feeds them what it read from the API
server. The output is validated by the sidecar's own model
(:class:`~aegis.sidecar.contract.SidecarConfig`), so a ConfigMap the operator
writes is one the sidecar accepts, and the YAML is deterministic (same input,
same bytes), so the hash changes exactly when the config does. The hash is the
sidecar's own :func:`~aegis.sidecar.runtime.watcher.content_hash` of those bytes, so
``status.configHash``, the ConfigMap annotation and the hash a sidecar reports
for the file it loaded are one value.

What the operator adds that the LLMRoute does not say:
- ``identity`` (route, namespace) from the object's metadata;
- ``providers[].apiKeyEnv``: ``AEGIS_KEY_<PROVIDER>`` for each ``apiKeySecretRef``;
- ``budgets`` from the LLMBudgets whose scope includes the route and the
  ClusterLLMBudgets whose namespaceSelector matches its namespace (with their
  ``rateLimits``); the route's own ``rateLimits`` as written;
- ``ledger.urlEnv: AEGIS_LEDGER_DSN`` (the injector fills it from a Secret);
- ``rollout.weight/step/salt`` from the rollout state (``status.rollout``);
- ``listen``: the sidecar defaults (the injector passes ports on the command line).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml
from pydantic import ValidationError

from aegis.sidecar.contract import BudgetKey, content_hash
from aegis.sidecar.contract.schema import BudgetSpec, LedgerSpec, SidecarConfig

from ..api.naming import LEDGER_DSN_ENV, key_env_var
from ..api.specs import LLMRouteSpec
from ..api.status import RouteRolloutStatus
from ..rollout.state import candidate_hash

ALL_NAMESPACES = "*"
_TOP_ORDER = ("apiVersion", "kind", "identity", "providers", "privacy", "rules", "default")


class RenderError(Exception):
    """The route cannot be rendered; ``reason`` becomes the condition reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True, slots=True)
class AppliedBudget:
    """What a route needs of one budget: its limit and the routes it applies to. An
    LLMBudget has its namespace; a ClusterLLMBudget has none (``""``) and a scope of
    the namespaces its selector matches."""

    namespace: str
    name: str
    spec: BudgetSpec
    routes: frozenset[str]
    #: Namespaces whose routes it applies to (:data:`ALL_NAMESPACES` for all).
    scope: frozenset[str]

    @property
    def key(self) -> str:
        """``namespace/name`` of an LLMBudget, the name alone of a ClusterLLMBudget."""
        return f"{self.namespace}/{self.name}" if self.namespace else self.name

    def applies_to(self, namespace: str, route: str, providers: Iterable[str]) -> bool:
        """Whether a route of ``providers`` renders the budget. A budget naming no
        provider covers every paid one: each sidecar leaves its local providers out."""
        in_scope = ALL_NAMESPACES in self.scope or namespace in self.scope
        route_ok = not self.routes or route in self.routes
        named = self.spec.provider_names
        provider_ok = bool(set(named) & set(providers)) if named else True
        return in_scope and route_ok and provider_ok


@dataclass(frozen=True, slots=True)
class SecretUse:
    """A provider's key reference, to check that the Secret and key exist."""

    provider: str
    secret: str
    key: str
    field: str  # e.g. spec.providers[2].apiKeySecretRef


@dataclass(frozen=True, slots=True)
class Rendered:
    config: SidecarConfig
    text: str
    hash: str
    secrets: tuple[SecretUse, ...]
    budgets: tuple[AppliedBudget, ...]


def field_path(loc: Sequence[int | str], prefix: str = "spec") -> str:
    """A pydantic error location as a Kubernetes field path: spec.providers[0].baseURL."""
    path = prefix
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def describe_validation_error(error: ValidationError, prefix: str = "spec") -> str:
    problems = []
    for item in error.errors(include_url=False):
        loc = [p for p in item["loc"] if not (isinstance(p, str) and p.startswith("function-"))]
        problems.append(f"{field_path(loc, prefix)}: {item['msg']}")
    return "; ".join(problems)


def parse_route_spec(spec: Mapping[str, Any] | None) -> LLMRouteSpec:
    """The spec as typed models; ``RenderError('InvalidSpec')`` naming each bad field."""
    try:
        return LLMRouteSpec.model_validate(spec or {})
    except ValidationError as error:
        raise RenderError("InvalidSpec", describe_validation_error(error)) from None


def _document(
    namespace: str,
    name: str,
    spec: LLMRouteSpec,
    budgets: Sequence[BudgetSpec],
    rollout: RouteRolloutStatus | None,
) -> dict[str, Any]:
    providers = []
    for provider in spec.providers:
        item = provider.model_dump(by_alias=True, exclude={"api_key_secret_ref", "api_key_env"})
        if provider.api_key_secret_ref is not None:
            item["apiKeyEnv"] = key_env_var(provider.name)
        providers.append(item)
    document: dict[str, Any] = {
        "identity": {"route": name, "namespace": namespace},
        "providers": providers,
        "rules": [rule.model_dump(by_alias=True) for rule in spec.rules],
        "default": spec.default.model_dump(by_alias=True),
        "fallback": list(spec.fallback),
        "budgets": [budget.model_dump(by_alias=True) for budget in budgets],
        "ledger": LedgerSpec(url_env=LEDGER_DSN_ENV).model_dump(by_alias=True),
    }
    if spec.privacy is not None:
        document["privacy"] = spec.privacy.model_dump(by_alias=True)
    if spec.rate_limits is not None:
        document["rateLimits"] = spec.rate_limits.model_dump(by_alias=True)
    if spec.rollout is not None and rollout is not None:
        document["rollout"] = {
            "candidate": spec.rollout.candidate.model_dump(by_alias=True),
            "weight": rollout.weight,
            "step": rollout.step,
            "salt": candidate_hash(spec.rollout.candidate),
            "stickiness": spec.rollout.stickiness.model_dump(by_alias=True),
        }
    return document


def config_text(config: SidecarConfig, namespace: str, name: str) -> str:
    """Deterministic YAML for ``config``: fixed key order, every value explicit."""
    document = config.model_dump(mode="json", by_alias=True, exclude_none=True)
    ordered = {key: document[key] for key in _TOP_ORDER if key in document}
    ordered.update((k, v) for k, v in document.items() if k not in ordered)
    header = (
        f"# Rendered by the Aegis operator from LLMRoute {namespace}/{name}; edits are "
        "overwritten.\n"
    )
    return header + yaml.safe_dump(ordered, sort_keys=False, width=100, allow_unicode=True)


def _check_budget_keys(budgets: Sequence[AppliedBudget]) -> None:
    seen: dict[BudgetKey, AppliedBudget] = {}
    for budget in budgets:
        other = seen.setdefault(budget.spec.key(budget.namespace), budget)
        if other is not budget:
            raise RenderError(
                "BudgetConflict",
                f"budgets {other.key} and {budget.key} both apply to this route under the "
                f"key {budget.spec.key(budget.namespace)}",
            )


def render_route(
    namespace: str,
    name: str,
    spec: LLMRouteSpec,
    budgets: Iterable[AppliedBudget] = (),
    rollout: RouteRolloutStatus | None = None,
) -> Rendered:
    """Render and validate; ``RenderError`` says why the result would be refused."""
    providers = [p.name for p in spec.providers]
    applying = sorted(
        (b for b in budgets if b.applies_to(namespace, name, providers)),
        key=lambda b: (b.name, b.namespace),  # a ClusterLLMBudget before a namesake
    )
    try:  # the route alone first, so that spec problems are not blamed on budgets
        SidecarConfig.model_validate(_document(namespace, name, spec, [], rollout))
    except ValidationError as error:
        raise RenderError("InvalidSpec", describe_validation_error(error)) from None
    _check_budget_keys(applying)
    document = _document(namespace, name, spec, [b.spec for b in applying], rollout)
    try:
        config = SidecarConfig.model_validate(document)
    except ValidationError as error:
        names = ", ".join(b.key for b in applying)
        raise RenderError(
            "BudgetConflict",
            f"the LLMBudgets that apply ({names}) do not fit together: "
            f"{describe_validation_error(error, prefix='config')}",
        ) from None
    text = config_text(config, namespace, name)
    secrets = tuple(
        SecretUse(
            provider=p.name,
            secret=p.api_key_secret_ref.name,
            key=p.api_key_secret_ref.key,
            field=f"spec.providers[{i}].apiKeySecretRef",
        )
        for i, p in enumerate(spec.providers)
        if p.api_key_secret_ref is not None
    )
    return Rendered(
        config=config,
        text=text,
        hash=content_hash(text.encode()),
        secrets=secrets,
        budgets=tuple(applying),
    )
