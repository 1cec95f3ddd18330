"""Prometheus metrics of one sidecar.

Each sidecar owns its own ``CollectorRegistry`` (not the global one) so several
sidecars can live in one test process and ``/metrics`` shows only Aegis series.
Label values come from config (provider, model, rule) or small enums, never from
requests, so cardinality is bounded by the route's configuration.

Every series ``/metrics`` serves also carries :data:`CONSTANT_LABELS`, ``namespace``
and ``route``: one sidecar serves one route in one namespace, so they are constant per
process (one value each: they add no series to a sidecar's, and across a fleet they
split nothing the ``pod`` label does not already split). They are added when the
series are served (:meth:`SidecarMetrics.exposition`), not on the request path.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

# Upstream LLM latencies span milliseconds (local cache hits) to minutes (long
# completions); the default buckets stop at 10 s.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


CONSTANT_LABELS = ("namespace", "route")
"""Labels of every sidecar series as served, constant per process."""


class ConstantLabels:
    """A collector serving ``source``'s series with ``labels`` added to each sample (a
    series' own label of the same name, e.g. ``aegis_config_info``'s, is kept)."""

    def __init__(self, source: Collector, labels: Mapping[str, str]) -> None:
        self._source = source
        self._labels = dict(labels)

    def collect(self) -> Iterator[Metric]:
        for family in self._source.collect():
            served = Metric(family.name, family.documentation, family.type, family.unit)
            served.samples = [
                sample._replace(labels={**self._labels, **sample.labels})
                for sample in family.samples
            ]
            yield served


@dataclass(frozen=True, slots=True)
class OutcomeSeries:
    """The labelled series every finished request updates, for one combination of
    provider, model, outcome and arm (see :meth:`SidecarMetrics.outcome`)."""

    requests: Counter
    duration: Histogram
    rollout: Counter


class SidecarMetrics:
    """All series a sidecar exports; names follow Prometheus conventions."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        # Labelled children of the per-request series, looked up once per label
        # combination: ``labels()`` validates and locks on every call (~2 us each,
        # six per request). Safe because these series are never ``clear()``ed and
        # their labels come from config, so the cache is as bounded as the series.
        self._outcomes: dict[tuple[str, str, str, str], OutcomeSeries] = {}
        self._tokens: dict[tuple[str, str], tuple[Counter, Counter]] = {}
        self._costs: dict[tuple[str, str], Counter] = {}
        self._ttfts: dict[str, Histogram] = {}
        self._apis: dict[tuple[str, int], Counter] = {}
        r = self.registry
        self.requests = Counter(
            "aegis_requests",
            "Requests answered, by final provider, model, outcome and rollout arm.",
            ["provider", "model", "outcome", "arm"],
            registry=r,
        )
        self.request_duration = Histogram(
            "aegis_request_duration_seconds",
            "Time from request received to response complete.",
            ["provider", "outcome"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "aegis_time_to_first_token_seconds",
            "Streaming: time from request received to the first upstream byte forwarded.",
            ["provider"],
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            "aegis_tokens",
            "Tokens reported by upstream usage.",
            ["provider", "model", "direction"],
            registry=r,
        )
        self.cost = Counter(
            "aegis_cost_usd",
            "Settled cost in USD (the ledger holds the exact decimal amounts).",
            ["provider", "model"],
            registry=r,
        )
        self.fallbacks = Counter(
            "aegis_fallbacks",
            "A candidate was skipped or failed and the next one was used.",
            ["provider", "reason"],
            registry=r,
        )
        self.privacy = Counter(
            "aegis_privacy_decisions",
            "Privacy decisions: declared_local, kept_local (raised by detection), masked "
            "(a cloud call with the detected values masked), rerouted (target passed "
            "over), blocked (no local provider left).",
            ["data_class", "action"],
            registry=r,
        )
        self.pii_detections = Counter(
            "aegis_pii_detections",
            "Requests in which a detector found something (built-in kind, or "
            "custom:<pattern name>).",
            ["kind"],
            registry=r,
        )
        self.refusals = Counter(
            "aegis_refusals",
            "Requests refused by the sidecar, by OpenAI error code.",
            ["code"],
            registry=r,
        )
        self.api_requests = Counter(
            "aegis_api_requests",
            "Requests per API (chat, embeddings, responses, messages) by the HTTP status "
            "answered (a stream's is its head's: 200 once it started).",
            ["api", "status"],
            registry=r,
        )
        self.upstream_attempts = Counter(
            "aegis_upstream_attempts",
            "Calls made to providers, including retries, by result.",
            ["provider", "result"],
            registry=r,
        )
        self.inflight = Gauge(
            "aegis_inflight_requests", "Requests being processed now.", registry=r
        )
        self.circuit_state = Gauge(
            "aegis_circuit_state",
            "Circuit breaker per provider: 0 closed, 1 open, 2 half-open.",
            ["provider"],
            registry=r,
        )
        self.budget_limit = Gauge(
            "aegis_budget_limit_usd",
            "Budget limit for the current period.",
            ["budget", "budget_key", "provider"],
            registry=r,
        )
        self.budget_spent = Gauge(
            "aegis_budget_spent_usd",
            "Settled spend this period as seen by this sidecar.",
            ["budget", "budget_key", "provider"],
            registry=r,
        )
        self.budget_reserved = Gauge(
            "aegis_budget_reserved_usd",
            "Outstanding reservations of in-flight requests.",
            ["budget", "budget_key", "provider"],
            registry=r,
        )
        self.budget_remaining = Gauge(
            "aegis_budget_remaining_usd",
            "Limit minus spent and reserved.",
            ["budget", "budget_key", "provider"],
            registry=r,
        )
        self.budget_utilisation = Gauge(
            "aegis_budget_utilisation_ratio",
            "(spent + reserved) / limit, 0..1.",
            ["budget", "budget_key", "provider"],
            registry=r,
        )
        self.rollout_weight = Gauge(
            "aegis_rollout_weight",
            "Percent of traffic sent to the candidate policy by this sidecar's config.",
            registry=r,
        )
        self.rollout_requests = Counter(
            "aegis_rollout_requests", "Requests per rollout arm.", ["arm"], registry=r
        )
        self.config_reloads = Counter(
            "aegis_config_reloads",
            "Config reload attempts by result (applied, invalid, unchanged is not counted).",
            ["result"],
            registry=r,
        )
        self.config_valid = Gauge(
            "aegis_config_last_reload_valid",
            "1 when the newest config on disk is the one in use, 0 when it was refused.",
            registry=r,
        )
        self.config_info = Gauge(
            "aegis_config_info",
            "The config in use, by its content hash.",
            ["hash", "route", "namespace"],
            registry=r,
        )
        self.ledger_queue = Gauge(
            "aegis_ledger_queue_rows", "Ledger rows waiting to be written.", registry=r
        )
        self.ledger_errors = Counter(
            "aegis_ledger_write_errors", "Failed ledger batch writes (retried).", registry=r
        )

    def exposition(self, namespace: str, route: str) -> Collector:
        """What ``/metrics`` serves: every series with this sidecar's namespace and route."""
        return ConstantLabels(self.registry, {"namespace": namespace, "route": route})

    def outcome(self, provider: str, model: str, outcome: str, arm: str) -> OutcomeSeries:
        """The series of a request that ended with ``outcome`` on ``provider``/``model``."""
        key = (provider, model, outcome, arm)
        series = self._outcomes.get(key)
        if series is None:
            series = self._outcomes[key] = OutcomeSeries(
                requests=self.requests.labels(provider, model, outcome, arm),
                duration=self.request_duration.labels(provider, outcome),
                rollout=self.rollout_requests.labels(arm),
            )
        return series

    def token_counters(self, provider: str, model: str) -> tuple[Counter, Counter]:
        """(tokens in, tokens out) of ``provider``/``model``."""
        key = (provider, model)
        pair = self._tokens.get(key)
        if pair is None:
            pair = self._tokens[key] = (
                self.tokens.labels(provider, model, "in"),
                self.tokens.labels(provider, model, "out"),
            )
        return pair

    def cost_counter(self, provider: str, model: str) -> Counter:
        key = (provider, model)
        counter = self._costs.get(key)
        if counter is None:
            counter = self._costs[key] = self.cost.labels(provider, model)
        return counter

    def api_counter(self, api: str, status: int) -> Counter:
        key = (api, status)
        counter = self._apis.get(key)
        if counter is None:
            counter = self._apis[key] = self.api_requests.labels(api, str(status))
        return counter

    def ttft_histogram(self, provider: str) -> Histogram:
        histogram = self._ttfts.get(provider)
        if histogram is None:
            histogram = self._ttfts[provider] = self.ttft.labels(provider)
        return histogram
