"""What the config's types check and compute, written once for both representations.

The schema models (pydantic, ``schema/``: the operator, the CRD schema, the docs) and
the sidecar's runtime types (``structs.py``, generated from them) both inherit these
mixins. A mixin's ``check`` holds every rule that a field's own constraints cannot
say (cross-field rules, a time zone that must exist, a pattern that must compile);
both sides run it once a value's fields are valid, so they accept and refuse the
same documents. Messages name the offending field by its wire (camelCase) name.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from decimal import Decimal
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import re2

from .budget_key import BudgetKey, BudgetScope
from .money import MONEY_PRECISION, MONEY_SCALE
from .vocabulary import DEFAULT_BASE_URLS, Locality, ProviderType, RateUnit

# RE2's memory budget for one pattern (its default is 8 MiB): enough for any
# sensible identifier pattern, refuses a pattern that would blow up its DFA.
_PATTERN_MEMORY = 1 << 20


def check_money(value: Decimal) -> None:
    """The ``Money`` constraints (``ge=0, max_digits=18, decimal_places=6``) with the
    schema's semantics: trailing zeros do not count (``1.5000000`` is money)."""
    if not value.is_finite():
        raise ValueError("Input should be a finite number")
    _, digit_tuple, exponent = value.normalize().as_tuple()
    assert isinstance(exponent, int)  # finite
    if exponent >= 0:
        digits, places = len(digit_tuple) + exponent, 0
    else:
        places = -exponent
        digits = max(len(digit_tuple), places)
    if digits > MONEY_PRECISION:
        raise ValueError(
            f"Decimal input should have no more than {MONEY_PRECISION} digits in total"
        )
    if places > MONEY_SCALE:
        raise ValueError(f"Decimal input should have no more than {MONEY_SCALE} decimal places")
    if digits - places > MONEY_PRECISION - MONEY_SCALE:
        raise ValueError(
            "Decimal input should have no more than "
            f"{MONEY_PRECISION - MONEY_SCALE} digits before the decimal point"
        )
    if value < 0:
        raise ValueError("Input should be greater than or equal to 0")


def check_unique(field: str, values: Sequence[str], what: str = "entries") -> None:
    """``ValueError`` ("``field``: ``what`` must be unique") when a value repeats."""
    if len(set(values)) != len(values):
        raise ValueError(f"{field}: {what} must be unique")


class Checked:
    """Base of every mixin: ``check`` raises ``ValueError`` for a value its field
    constraints let through but the config must not hold."""

    __slots__ = ()

    def check(self) -> None:
        return None


class ProviderModelsMethods(Checked):
    __slots__ = ()
    if TYPE_CHECKING:
        vision: Sequence[str]

    def check(self) -> None:
        check_unique("vision", self.vision)


class _ProviderModelsFacts(Protocol):
    @property
    def embedding(self) -> str | None: ...


class ProviderSpecMethods(Checked):
    __slots__ = ()
    if TYPE_CHECKING:
        name: str
        type: ProviderType
        base_url: str | None
        locality: Locality | None
        sdk_provider: str | None

        @property
        def models(self) -> _ProviderModelsFacts: ...

    def check(self) -> None:
        if self.type is ProviderType.ANY_LLM and not self.sdk_provider:
            raise ValueError("sdkProvider is required when type is any-llm")
        if self.type is not ProviderType.ANY_LLM and self.sdk_provider:
            raise ValueError("sdkProvider is only allowed when type is any-llm")
        if self.type is ProviderType.ANTHROPIC and self.models.embedding:
            raise ValueError(
                "provider type anthropic has no embeddings API; unset models.embedding"
            )
        if self.base_url is None and self.type is ProviderType.OPENAI_COMPATIBLE:
            # any-llm providers know their own endpoints; a generic OpenAI-wire server does not.
            raise ValueError("baseURL is required for provider type openai-compatible")

    @property
    def resolved_base_url(self) -> str | None:
        """The base URL to call (any-llm may use its own default)."""
        return self.base_url or DEFAULT_BASE_URLS.get(self.type)

    @property
    def resolved_locality(self) -> Locality:
        if self.locality is not None:
            return self.locality
        return Locality.LOCAL if self.type is ProviderType.OLLAMA else Locality.CLOUD

    @property
    def is_local(self) -> bool:
        return self.resolved_locality is Locality.LOCAL


class RateLimitSpecMethods(Checked):
    __slots__ = ()
    if TYPE_CHECKING:
        requests_per_minute: int | None
        tokens_per_minute: int | None

    def check(self) -> None:
        if self.requests_per_minute is None and self.tokens_per_minute is None:
            raise ValueError("rateLimits needs requestsPerMinute, tokensPerMinute or both")

    def limit(self, unit: RateUnit) -> int | None:
        """The limit of ``unit`` per minute, ``None`` when not limited."""
        if unit is RateUnit.REQUESTS:
            return self.requests_per_minute
        return self.tokens_per_minute


class CustomPatternMethods(Checked):
    __slots__ = ()
    if TYPE_CHECKING:
        regex: str

    def check(self) -> None:
        options = re2.Options()
        options.log_errors = False
        options.max_mem = _PATTERN_MEMORY
        try:
            compiled = re2.compile(self.regex, options)
        except re2.error as exc:
            detail = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else exc
            raise ValueError(f"regex: not a valid RE2 pattern: {detail}") from None
        if "(?P<" in self.regex:
            raise ValueError("regex: named groups are not allowed; use (?:...)")
        if compiled.search("") is not None:
            raise ValueError(
                "regex: the pattern matches the empty string (it would match every request)"
            )


class _PatternFacts(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def data_class(self) -> str: ...


class PrivacySpecMethods(Checked):
    __slots__ = ()
    if TYPE_CHECKING:
        classes: Sequence[str]
        local_only: Sequence[str]
        default_class: str
        detected_class: str
        mask: Sequence[str]

        @property
        def patterns(self) -> Sequence[_PatternFacts]: ...

    def check(self) -> None:
        known = set(self.classes)
        if len(known) != len(self.classes):
            raise ValueError("privacy.classes must be unique")
        for field, values in (
            ("localOnly", self.local_only),
            ("defaultClass", (self.default_class,)),
            ("detectedClass", (self.detected_class,)),
            ("mask", self.mask),
        ):
            for item in values:
                if item not in known:
                    raise ValueError(f"privacy.{field}: unknown class {item!r}")
        check_unique("privacy.patterns", [p.name for p in self.patterns], "names")
        for pattern in self.patterns:
            if pattern.data_class not in known:
                raise ValueError(
                    f"privacy.patterns[{pattern.name}].dataClass: unknown class "
                    f"{pattern.data_class!r}"
                )

    def rank(self, data_class: str) -> int:
        """Strictness of a class (higher is stricter)."""
        return self.classes.index(data_class)


class RuleMatchMethods(Checked):
    __slots__ = ()
    if TYPE_CHECKING:
        min_batch_size: int | None
        max_batch_size: int | None

    def check(self) -> None:
        low, high = self.min_batch_size, self.max_batch_size
        if low is not None and high is not None and low > high:
            raise ValueError(f"minBatchSize ({low}) must not exceed maxBatchSize ({high})")


class BudgetSpecMethods(Checked):
    __slots__ = ()
    if TYPE_CHECKING:
        name: str
        provider: str | None
        providers: Sequence[str]
        models: Sequence[str]
        data_classes: Sequence[str]
        service_accounts: Sequence[str]
        timezone: str
        scope: BudgetScope
        namespace: str | None

    def check(self) -> None:
        if self.scope is BudgetScope.CLUSTER and self.namespace is not None:
            raise ValueError("namespace is not allowed for a Cluster budget")
        if self.scope is BudgetScope.CLUSTER and self.service_accounts:
            raise ValueError("serviceAccounts: only a namespaced budget may name them")
        if self.provider is not None and self.providers:
            raise ValueError("providers: set provider or providers, not both")
        check_unique("providers", self.providers)
        check_unique("models", self.models)
        check_unique("dataClasses", self.data_classes)
        check_unique("serviceAccounts", self.service_accounts)
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"timezone: unknown time zone {self.timezone!r}") from None

    @property
    def provider_names(self) -> tuple[str, ...]:
        """The providers the budget names (``provider`` or ``providers``); empty: every
        cloud provider."""
        return (self.provider,) if self.provider is not None else tuple(self.providers)

    def applies(
        self,
        provider: str,
        *,
        local: bool = False,
        models: Sequence[str] = (),
        data_class: str | None = None,
        service_account: str | None = None,
    ) -> bool:
        """Does the budget apply to a call of ``provider`` (``local``: a local provider,
        which a budget naming no provider leaves alone) that may use ``models``, of
        ``data_class``, from a pod running as ``service_account``? What is not known
        (no models, no class, no ServiceAccount) matches: a filter never lets a call
        escape a budget for want of a fact."""
        names = self.provider_names
        if (provider not in names) if names else local:
            return False
        if (
            self.models
            and models
            and not any(fnmatchcase(m, glob) for m in models for glob in self.models)
        ):
            return False
        if self.data_classes and data_class is not None and data_class not in self.data_classes:
            return False
        return not (
            self.service_accounts
            and service_account is not None
            and service_account not in self.service_accounts
        )

    def key(self, default_namespace: str = "") -> BudgetKey:
        """The budget's ledger key; a Namespace budget without ``namespace`` is of
        ``default_namespace`` (the config's own)."""
        if self.scope is BudgetScope.CLUSTER:
            return BudgetKey(self.scope, "", self.name)
        return BudgetKey(self.scope, self.namespace or default_namespace, self.name)


class ListenSpecMethods(Checked):
    __slots__ = ()
    if TYPE_CHECKING:
        host: str
        metrics_host: str

    def check(self) -> None:
        try:
            ipaddress.ip_address(self.metrics_host)
        except ValueError:
            raise ValueError(
                f"metricsHost must be an IP address, not {self.metrics_host!r}"
            ) from None
        try:
            loopback = ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            loopback = self.host == "localhost"
        if not loopback:
            raise ValueError("host: the sidecar listens on a loopback address only")
