"""The ``aegis.io/v1alpha1`` API: ``LLMRoute`` and ``LLMBudget``, as pydantic models.

One source of truth. The CRD schemas in ``crds/`` are generated from these
models (``python -m aegis.operator.api.crdgen``), and most of them *are* the sidecar
config models of :mod:`aegis.sidecar.contract`: a route's providers, privacy,
rules, default and fallback are the very classes the sidecar validates, so the
CRD and the rendered config cannot drift. What only the cluster needs is added
here: ``apiKeySecretRef`` (the config names an env var instead), ``podSelector``,
the rollout plan (:mod:`aegis.operator.api.rollout`: steps, interval, analysis,
manual controls; the config gets only the current weight) and the budget's scope
(routes, namespaces).

The CEL rules (``x-kubernetes-validations``) are the API server's copy of the
sidecar's cross-field validators, so a bad object is refused at ``kubectl
apply`` rather than discovered by the operator; every list and string they
touch has ``maxItems``/``maxLength``, which bounds their estimated cost.
Status types: :mod:`aegis.operator.api.status`.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import ConfigDict, Field

from aegis.sidecar.contract.schema import (
    BudgetSpec,
    Model,
    Name,
    Policy,
    PrivacySpec,
    ProviderSpec,
    RateLimitSpec,
)

from .extras import DNS_SUBDOMAIN, cel, cel_list, extra, unique
from .rollout import RolloutPlan

NamespaceOrAll = Annotated[
    str, Field(max_length=63, pattern=r"^(\*|[a-z0-9]([-a-z0-9]*[a-z0-9])?)$")
]


# -- references to other objects ---------------------------------------------------


class SecretKeySelector(Model):
    """A key of a Secret in the route's namespace holding a provider's API key.

    The operator only checks that the Secret and the key exist; the value is never
    read into the rendered config. The injector hands it to the sidecar as the
    environment variable ``AEGIS_KEY_<PROVIDER>`` with a ``secretKeyRef``."""

    name: str = Field(
        min_length=1, max_length=253, pattern=DNS_SUBDOMAIN, description="Name of the Secret."
    )
    key: str = Field(
        min_length=1,
        max_length=253,
        pattern=r"^[-._a-zA-Z0-9]+$",
        description="Key in the Secret's data whose value is the API key.",
    )


class LabelSelectorRequirement(Model):
    """A label selector requirement, as in Kubernetes' own ``LabelSelector``."""

    model_config = ConfigDict(
        json_schema_extra=extra(
            cel(
                "self.operator in ['In', 'NotIn'] ? (has(self.values) && size(self.values) > 0)"
                " : (!has(self.values) || size(self.values) == 0)",
                "values must be non-empty for In and NotIn and empty for Exists and DoesNotExist",
                ".values",
            )
        )
    )

    key: str = Field(min_length=1, max_length=317, description="The label key.")
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"] = Field(
        description="How the key relates to the values."
    )
    values: list[Annotated[str, Field(max_length=63)]] = Field(
        default_factory=list, max_length=64, description="Label values for In and NotIn."
    )


class LabelSelector(Model):
    """Which pods use this route (evaluated by the injector when a pod is created).

    All matchLabels and matchExpressions must hold; an empty selector selects every
    pod of the namespace that opts in. Without a podSelector a pod chooses the route
    with the annotation ``aegis.io/route: <name>``, which always wins."""

    match_labels: dict[str, Annotated[str, Field(max_length=63)]] = Field(
        default_factory=dict, max_length=64, description="Labels a pod must carry."
    )
    match_expressions: list[LabelSelectorRequirement] = Field(
        default_factory=list, max_length=16, description="Label requirements, all must hold."
    )


# -- LLMRoute spec -----------------------------------------------------------------


class RouteProvider(ProviderSpec):
    """One LLM provider the route may call (the sidecar's provider config, with the key
    given as a Secret reference instead of an environment variable name)."""

    model_config = ConfigDict(
        json_schema_extra=extra(
            cel(
                "self.type == 'any-llm' ? has(self.sdkProvider) : !has(self.sdkProvider)",
                "sdkProvider is required when type is any-llm and not allowed otherwise",
                ".sdkProvider",
            ),
            cel(
                "self.type != 'openai-compatible' || has(self.baseURL)",
                "baseURL is required when type is openai-compatible",
                ".baseURL",
            ),
            cel(
                "self.type != 'anthropic' || !has(self.models.embedding)",
                "provider type anthropic has no embeddings API; unset models.embedding",
                ".models.embedding",
            ),
            drop=("apiKeyEnv",),
        )
    )

    api_key_secret_ref: SecretKeySelector | None = Field(
        default=None,
        alias="apiKeySecretRef",
        description="The Secret key holding the API key; omit for providers without "
        "authentication (e.g. a local Ollama).",
    )


_DEFAULT_PRIVACY = PrivacySpec()


_CLASSES = f"(has(self.classes) ? self.classes : {cel_list(_DEFAULT_PRIVACY.classes)})"


def _known(field: str, default: str) -> str:
    return f"(has(self.{field}) ? self.{field} : '{default}') in {_CLASSES}"


class RoutePrivacy(PrivacySpec):
    """Which data classes must stay on local providers, and PII detection."""

    model_config = ConfigDict(
        json_schema_extra=extra(
            cel(
                "(has(self.localOnly) ? self.localOnly : "
                f"{cel_list(_DEFAULT_PRIVACY.local_only)}).all(c, c in (has(self.classes) ? "
                f"self.classes : {cel_list(_DEFAULT_PRIVACY.classes)}))",
                "every localOnly class must be one of classes",
                ".localOnly",
            ),
            cel(
                _known("defaultClass", _DEFAULT_PRIVACY.default_class),
                "defaultClass must be one of classes",
                ".defaultClass",
            ),
            cel(
                _known("detectedClass", _DEFAULT_PRIVACY.detected_class),
                "detectedClass must be one of classes",
                ".detectedClass",
            ),
            cel(
                f"!has(self.mask) || self.mask.all(c, c in {_CLASSES})",
                "every mask class must be one of classes",
                ".mask",
            ),
            cel(
                f"!has(self.patterns) || self.patterns.all(p, p.dataClass in {_CLASSES})",
                "every pattern's dataClass must be one of classes",
                ".patterns",
            ),
        )
    )


class LLMRouteSpec(Policy):
    """An LLM routing policy for the pods it selects: providers, privacy classes, rules,
    fallback and an optional gradual rollout. The operator renders it (with the
    LLMBudgets that apply) into ConfigMap aegis-route-<name> for the injected sidecars."""

    model_config = ConfigDict(
        json_schema_extra=extra(
            cel(
                "!has(self.rules) || self.rules.all(r, "
                "self.providers.exists(p, p.name == r.to.provider))",
                "every rule's to.provider must name a provider in spec.providers",
                ".rules",
            ),
            cel(
                "self.providers.exists(p, p.name == self.default.provider)",
                "default.provider must name a provider in spec.providers",
                ".default.provider",
            ),
            cel(
                "!has(self.fallback) || self.fallback.all(f, "
                "self.providers.exists(p, p.name == f))",
                "every fallback entry must name a provider in spec.providers",
                ".fallback",
            ),
            cel(unique("fallback"), "fallback entries must be unique", ".fallback"),
            cel(
                "(has(self.privacy) && has(self.privacy.localOnly) && "
                "size(self.privacy.localOnly) == 0) || self.providers.exists(p, "
                "has(p.locality) ? p.locality == 'local' : p.type == 'ollama')",
                "privacy.localOnly classes (by default pii, hipaa and confidential) need a "
                "provider with locality local (type ollama is local unless it says otherwise)",
                ".providers",
            ),
            cel(
                "!has(self.rollout) || !has(self.rollout.candidate.rules) || "
                "self.rollout.candidate.rules.all(r, "
                "self.providers.exists(p, p.name == r.to.provider))",
                "every candidate rule's to.provider must name a provider in spec.providers",
                ".rollout.candidate.rules",
            ),
            cel(
                "!has(self.rollout) || "
                "self.providers.exists(p, p.name == self.rollout.candidate.default.provider)",
                "rollout.candidate.default.provider must name a provider in spec.providers",
                ".rollout.candidate.default.provider",
            ),
            cel(
                "!has(self.rollout) || !has(self.rollout.candidate.fallback) || "
                "self.rollout.candidate.fallback.all(f, self.providers.exists(p, p.name == f))",
                "every rollout.candidate.fallback entry must name a provider in spec.providers",
                ".rollout.candidate.fallback",
            ),
            cel(
                "!has(self.rollout) || !has(self.rollout.candidate.providerModels) || "
                "self.rollout.candidate.providerModels.all(k, "
                "self.providers.exists(p, p.name == k))",
                "every rollout.candidate.providerModels key must name a provider in spec.providers",
                ".rollout.candidate.providerModels",
            ),
        )
    )

    pod_selector: LabelSelector | None = Field(default=None)
    providers: list[RouteProvider] = Field(
        min_length=1, max_length=32, description="The providers this route may call."
    )
    privacy: RoutePrivacy | None = Field(
        default=None,
        description="Data classes and which of them stay local. Default: classes public, "
        "internal, confidential, pii, hipaa; localOnly pii, hipaa, confidential; "
        "PII detection on.",
    )
    rollout: RolloutPlan | None = None
    rate_limits: RateLimitSpec | None = Field(
        default=None,
        description="Requests/tokens per minute of this route, shared exactly by all its "
        "sidecars; over a limit a request gets 429 with Retry-After.",
    )


# -- LLMBudget spec ----------------------------------------------------------------


class LLMBudgetSpec(BudgetSpec):
    """A calendar-month USD limit for one provider.

    Spend is every ledger row of the provider in the month, from any route: the
    sidecars of the routes the budget applies to enforce the limit with leases on
    the shared ledger. By default it applies to every route in its namespace that
    declares the provider."""

    model_config = ConfigDict(
        json_schema_extra=extra(
            cel(
                "!has(self.namespaces) || !('*' in self.namespaces) || size(self.namespaces) == 1",
                "'*' must be the only entry of namespaces",
                ".namespaces",
            ),
            # Who the budget is comes from its metadata (namespace, name) and its kind.
            drop=("name", "scope", "namespace"),
        )
    )

    routes: list[Name] = Field(
        default_factory=list,
        max_length=64,
        description="Only these LLMRoutes (by name) enforce the budget; empty: all of them.",
    )
    namespaces: list[NamespaceOrAll] = Field(
        default_factory=list,
        max_length=64,
        description="Namespaces whose routes enforce the budget ('*': all). Honoured only "
        "for budgets in the operator's platform namespace; empty: the budget's own.",
    )

    def budget(self) -> BudgetSpec:
        """The part the sidecar config carries."""
        return BudgetSpec.model_validate(
            self.model_dump(include=set(BudgetSpec.model_fields), by_alias=True)
        )
