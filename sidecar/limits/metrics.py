"""Rate-limit figures for Prometheus, read at scrape time (no request-path cost)."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .leases import LeaseSlots
from .limiter import RateLimiter


class RateCollector(Collector):
    """Per limit (``scope`` Route or Budget, its ``name``, the ``unit``): refusals,
    slots held, busy and reserved; the lease statements sent."""

    def __init__(self, limiter: RateLimiter, leases: LeaseSlots | None = None) -> None:
        self.limiter = limiter
        self.leases = leases

    def collect(self) -> Iterable[Metric]:
        labels = ["scope", "name", "unit"]
        refusals = CounterMetricFamily(
            "aegis_rate_limit_refusals",
            "Requests (or calls) refused for a rate limit without room (429).",
            labels=labels,
        )
        held = GaugeMetricFamily(
            "aegis_rate_limit_held", "Slots of the limit this sidecar holds.", labels=labels
        )
        busy = GaugeMetricFamily(
            "aegis_rate_limit_busy",
            "Slots used less than a window ago, or reserved by calls in flight.",
            labels=labels,
        )
        now = self.limiter.clock()
        for key, pool in sorted(self.limiter.pools.items(), key=lambda item: str(item[0])):
            values = [key.kind, f"{key.namespace}/{key.name}".lstrip("/"), key.unit.value]
            refusals.add_metric(values, self.limiter.refusals.get(key, 0))
            held.add_metric(values, pool.held)
            busy.add_metric(values, pool.committed(now))
        yield refusals
        yield held
        yield busy
        if self.leases is not None:
            yield CounterMetricFamily(
                "aegis_rate_lease_statements",
                "aegis.rate_lease statements sent (one round trip each).",
                value=self.leases.statements,
            )
