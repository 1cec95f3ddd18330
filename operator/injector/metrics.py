"""Prometheus metrics of the injector (served on its plain-HTTP metrics port).

``aegis_injector_admissions_total{outcome, reason}`` is the one to alert on: a rise of
``outcome="refused"`` means pods that asked for a sidecar are not being created.
Label values are bounded (reasons come from a fixed set in :mod:`.admission`).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from . import certs

OUTCOMES = {
    "injected": ("injected",),
    "skipped": (
        "not-opted-in",
        "opt-out",
        "already-injected",
        "protected-namespace",
        "static-pod",
    ),
    "refused": ("no-route", "multiple-routes", "unknown-route", "conflict", "not-ready"),
}


class InjectorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self.admissions = Counter(
            "aegis_injector_admissions",
            "Pod admission reviews by outcome (injected, skipped, refused) and reason.",
            ["outcome", "reason"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "aegis_injector_admission_duration_seconds",
            "Time to answer one AdmissionReview, from request body to response.",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5),
            registry=self.registry,
        )
        self.routes = Gauge(
            "aegis_injector_routes",
            "LLMRoutes in the injector's cache.",
            registry=self.registry,
        )
        self.routes_synced = Gauge(
            "aegis_injector_routes_synced",
            "1 once the LLMRoute cache has been listed (0: opted-in pods are refused).",
            registry=self.registry,
        )
        self.cert_expiry = Gauge(
            "aegis_injector_certificate_expiry_timestamp_seconds",
            "When the serving certificate in use expires (Unix time).",
            registry=self.registry,
        )
        self.cert_loads = Counter(
            "aegis_injector_certificate_loads",
            "Serving certificates loaded (start and every rotation).",
            registry=self.registry,
        )
        for outcome, reasons in OUTCOMES.items():
            for reason in reasons:
                self.admissions.labels(outcome, reason)

    def routes_changed(self, count: int, synced: bool) -> None:
        self.routes.set(count)
        self.routes_synced.set(1 if synced else 0)

    def certificate_loaded(self, cert_pem: bytes) -> None:
        self.cert_loads.inc()
        self.cert_expiry.set(certs.not_after(cert_pem).timestamp())
