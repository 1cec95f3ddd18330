"""The whole sidecar config document, as the operator renders it (``config.yaml``)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from ..behaviour import BudgetSpecMethods, ListenSpecMethods
from ..budget_key import BudgetScope
from ..periods import PeriodKind
from ..references import SidecarConfigMethods
from ..vocabulary import OnExceeded
from .base import DataClass, Model, Money, Name
from .policy import Policy, PrivacySpec, RolloutSpec
from .providers import ProviderSpec
from .rate_limits import RateLimitSpec

ModelGlob = Annotated[
    str,
    Field(
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9._:/@*?\[\]!-]+$",
        description="A model name or shell-style glob (*, ?, [...]).",
    ),
]
ServiceAccountName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=253,
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
        description="A ServiceAccount name (DNS subdomain).",
    ),
]


class BudgetSpec(BudgetSpecMethods, Model):
    """A USD limit per period (a day, an ISO week or a calendar month in its time zone)
    on the calls it applies to, as rendered from an LLMBudget or a ClusterLLMBudget.

    A budget applies to a paid call when every filter it sets matches: ``provider``
    or ``providers`` (neither: every cloud provider), ``models``, ``dataClasses`` and
    ``serviceAccounts``. A call reserves its worst case in every budget that
    applies, all or nothing."""

    name: Name
    provider: Name | None = Field(
        default=None,
        description="The one provider whose calls the budget applies to. Set this or "
        "providers, not both; neither: every cloud provider.",
    )
    providers: list[Name] = Field(
        default_factory=list,
        max_length=32,
        description="Providers whose calls the budget applies to (instead of provider).",
    )
    models: list[ModelGlob] = Field(
        default_factory=list,
        max_length=32,
        description="Only calls to a model matching one of these shell-style globs "
        "(fnmatch, case-sensitive: gpt-4o*, claude-*-sonnet-*); empty: every model. A call "
        "that may use several models (a provider's list) is checked against all of them.",
    )
    data_classes: list[DataClass] = Field(
        default_factory=list,
        max_length=16,
        description="Only calls of these data classes (as detected: declared, raised by "
        "PII detection); empty: every class.",
    )
    service_accounts: list[ServiceAccountName] = Field(
        default_factory=list,
        max_length=64,
        description="Only calls from pods running as these ServiceAccounts of the "
        "budget's namespace (namespaced budgets only). Cooperative: any pod of the "
        "namespace may run as any of its ServiceAccounts; empty: every pod.",
    )
    limit_usd: Money = Field(alias="limitUSD", description="USD per period.")
    period: PeriodKind = Field(
        default=PeriodKind.MONTHLY,
        description="Daily (local midnight to midnight), Weekly (ISO week, Monday 00:00) "
        "or Monthly (the 1st, 00:00), in timezone. A new period starts with the whole "
        "limit; a call is charged to the period it was reserved in.",
    )
    timezone: str = Field(
        default="UTC", max_length=64, description="IANA zone of the period's boundaries."
    )
    on_exceeded: OnExceeded = Field(
        default=OnExceeded.FALLBACK_LOCAL,
        description="When the budget cannot cover a call: FallbackLocal (a local provider "
        "answers), Reject (429 budget_exceeded), Notify (the call goes ahead; counted in "
        "aegis_budget_notify_exceeded_total and shown in the budget's status).",
    )
    alert_thresholds: list[Annotated[int, Field(ge=1, le=100)]] = Field(
        default_factory=lambda: [80, 90, 100], max_length=10
    )
    scope: BudgetScope = Field(
        default=BudgetScope.NAMESPACE,
        description="Namespace: an LLMBudget of one namespace; Cluster: a cluster-wide budget.",
    )
    namespace: Name | None = Field(
        default=None,
        description="Namespace of a Namespace-scoped budget's object (default: "
        "identity.namespace); empty for Cluster.",
    )
    rate_limits: RateLimitSpec | None = Field(
        default=None,
        description="Requests/tokens per minute of the calls charged to this budget, "
        "shared by every sidecar that spends it.",
    )


class LedgerSpec(Model):
    url: str = Field(
        default="sqlite+aiosqlite:///aegis-ledger.db",
        max_length=2048,
        description=(
            "Ledger URL: sqlite:///relative.db, sqlite:////absolute.db or "
            "postgresql://user@host/db (a +aiosqlite or +asyncpg driver name is accepted); "
            "ignored when urlEnv is set in the environment."
        ),
    )
    url_env: str | None = Field(
        default=None,
        max_length=128,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="Environment variable holding the ledger DSN (from a Secret).",
    )


class LimitsSpec(Model):
    """Resource bounds of one sidecar: what a request may hold, how long it may take,
    how many may run at once. A request over a bound gets a 4xx naming it, in the
    endpoint's own error shape; an upstream over one ends the call as a failure."""

    max_header_bytes: int = Field(
        default=32 * 1024,
        ge=4096,
        le=1024 * 1024,
        description="Request headers, names and values together: over it, 431. One header "
        "line longer than twice this is cut off by the HTTP parser itself (plain 400).",
    )
    max_json_depth: int = Field(
        default=64,
        ge=8,
        le=512,
        description="Nesting of objects and arrays in a request body: deeper, 400.",
    )
    max_messages: int = Field(
        default=2048,
        ge=1,
        le=100_000,
        description="Items of messages (chat, Messages), input (Responses, embeddings): more, 400.",
    )
    max_tools: int = Field(default=256, ge=1, le=10_000, description="Entries of tools: more, 400.")
    max_content_parts: int = Field(
        default=512,
        ge=1,
        le=100_000,
        description="Content parts (blocks) of one message, or of a Messages system: more, 400.",
    )
    max_concurrent_requests: int = Field(
        default=256,
        ge=0,
        le=100_000,
        description="Model requests served at once (chat, embeddings, Responses, Messages); "
        "one more is answered 429 with Retry-After instead of queueing. 0: no cap.",
    )
    request_timeout_seconds: float = Field(
        default=600.0,
        gt=0,
        le=86_400,
        description="Per-request deadline: no attempt or retry starts after it, a call in "
        "flight is cut at it (504, or an error event once a stream has started).",
    )
    client_timeout_seconds: float = Field(
        default=60.0,
        gt=0,
        le=3600,
        description="Reading the request body, and each write of the answer to a client that "
        "does not read it: past it the client is dropped (408 while reading).",
    )
    max_upstream_event_bytes: int = Field(
        default=4 * 1024 * 1024,
        ge=64 * 1024,
        le=256 * 1024 * 1024,
        description="One SSE event (line) of an upstream stream: longer, the call fails "
        "(falls back before the first byte reached the client, else an error event). "
        "Each stream holds at most this much of an unfinished event in memory.",
    )
    max_upstream_body_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=64 * 1024,
        le=1024 * 1024 * 1024,
        description="A whole (non-stream) upstream answer: larger, the call fails (502).",
    )


class ListenSpec(ListenSpecMethods, Model):
    host: str = Field(default="127.0.0.1", description="Loopback address only.")
    port: int = Field(default=8787, ge=1, le=65535)
    metrics_port: int = Field(default=9787, ge=0, le=65535, description="0 disables.")
    metrics_host: str = Field(
        default="127.0.0.1",
        description="Address of the metrics listener (read-only, no request data); in a "
        "pod the injector keeps it on loopback unless Prometheus scrapes the sidecars "
        "(the chart then sets 0.0.0.0 behind a NetworkPolicy).",
    )
    max_body_bytes: int = Field(
        default=20 * 1024 * 1024,
        ge=1024,
        le=256 * 1024 * 1024,
        description="Request body: larger, 413 (from Content-Length before reading).",
    )
    limits: LimitsSpec = Field(default_factory=LimitsSpec)


class RouteIdentity(Model):
    """Who this config belongs to; recorded on every ledger row."""

    route: str = Field(default="standalone", max_length=253)
    namespace: str = Field(default="default", max_length=63)


class SidecarConfig(SidecarConfigMethods, Policy):
    """The whole sidecar configuration (one route plus its budgets)."""

    api_version: Literal["aegis.io/v1alpha1"] = "aegis.io/v1alpha1"
    kind: Literal["SidecarConfig"] = "SidecarConfig"
    identity: RouteIdentity = Field(default_factory=RouteIdentity)
    providers: list[ProviderSpec] = Field(min_length=1, max_length=32)
    privacy: PrivacySpec = Field(default_factory=PrivacySpec)
    rollout: RolloutSpec | None = None
    budgets: list[BudgetSpec] = Field(default_factory=list, max_length=64)
    rate_limits: RateLimitSpec | None = Field(
        default=None,
        description="Requests/tokens per minute of this route, shared by all its sidecars.",
    )
    ledger: LedgerSpec = Field(default_factory=LedgerSpec)
    listen: ListenSpec = Field(default_factory=ListenSpec)
