"""The operator's Prometheus metrics, on its own registry and port.

Budget gauges carry the labels ``budget``, ``namespace`` and ``provider``, the
same as the sidecars' own budget gauges, so alert rules can take the most
pessimistic of both (see the Helm chart's PrometheusRule). Money is exported as
float: Prometheus has no other number type; the exact figures are in the ledger
and in ``LLMBudget.status``.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from decimal import Decimal
from typing import get_args

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from .api.status import RolloutPhase, RouteRolloutStatus

BUDGET_LABELS = ("budget", "namespace", "provider")
ROUTE_LABELS = ("route", "namespace")
ROLLOUT_PHASES: tuple[str, ...] = get_args(RolloutPhase)
ROLLOUT_OUTCOMES = ("advance", "rollback", "promote", "wait", "ledger_unavailable")


@dataclass(frozen=True, slots=True)
class BudgetFigures:
    limit: Decimal
    spent: Decimal
    reserved: Decimal
    remaining: Decimal
    utilisation: Decimal  # spent / limit (1 for a zero limit)
    exceeded: bool
    synced_at: float  # unix time of the ledger read


class OperatorMetrics:
    """Gauges and counters; label sets of deleted objects are removed."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.budget_limit = Gauge(
            "aegis_budget_limit_usd",
            "Limit of a budget (LLMBudget or ClusterLLMBudget) for its current period.",
            BUDGET_LABELS,
            registry=r,
        )
        self.budget_spent = Gauge(
            "aegis_budget_spent_usd",
            "Settled spend charged to the budget this period (ledger).",
            BUDGET_LABELS,
            registry=r,
        )
        self.budget_reserved = Gauge(
            "aegis_budget_reserved_usd",
            "Money held by sidecars for calls in flight.",
            BUDGET_LABELS,
            registry=r,
        )
        self.budget_remaining = Gauge(
            "aegis_budget_remaining_usd",
            "Limit minus spent and reserved, not below zero.",
            BUDGET_LABELS,
            registry=r,
        )
        self.budget_utilisation = Gauge(
            "aegis_budget_utilisation_ratio",
            "Spent divided by the limit (1 for a zero limit).",
            BUDGET_LABELS,
            registry=r,
        )
        self.budget_exceeded = Gauge(
            "aegis_budget_exceeded",
            "1 when the limit is reached this period.",
            BUDGET_LABELS,
            registry=r,
        )
        self.budget_last_sync = Gauge(
            "aegis_budget_last_sync_timestamp_seconds",
            "Unix time of the last successful ledger read for the budget.",
            BUDGET_LABELS,
            registry=r,
        )
        self.ledger_up = Gauge(
            "aegis_operator_ledger_up",
            "1 when the last ledger read succeeded.",
            registry=r,
        )
        self.route_ready = Gauge(
            "aegis_route_ready",
            "1 when the LLMRoute's config is in effect.",
            ROUTE_LABELS,
            registry=r,
        )
        self.reconciles = Counter(
            "aegis_operator_reconciles_total",
            "Reconciles by kind and outcome (changed, unchanged, invalid, error).",
            ("kind", "outcome"),
            registry=r,
        )
        self.rollout_weight = Gauge(
            "aegis_rollout_weight",
            "Percent of the LLMRoute's traffic its rollout sends to the candidate policy "
            "(status.rollout.weight).",
            ROUTE_LABELS,
            registry=r,
        )
        self.rollout_phase = Gauge(
            "aegis_rollout_phase",
            "1 for the rollout's current phase (Progressing, Paused, Aborted, RolledBack, "
            "Promoted), 0 for the others.",
            (*ROUTE_LABELS, "phase"),
            registry=r,
        )
        self.rollout_decisions = Counter(
            "aegis_rollout_decisions",
            "Rollout controller decisions by outcome (advance, rollback, promote, wait, "
            "ledger_unavailable).",
            (*ROUTE_LABELS, "outcome"),
            registry=r,
        )
        self._budget_providers: dict[tuple[str, str], str] = {}

    @property
    def budget_gauges(self) -> tuple[Gauge, ...]:
        return (
            self.budget_limit,
            self.budget_spent,
            self.budget_reserved,
            self.budget_remaining,
            self.budget_utilisation,
            self.budget_exceeded,
            self.budget_last_sync,
        )

    def set_budget(
        self, namespace: str, budget: str, provider: str, figures: BudgetFigures
    ) -> None:
        old = self._budget_providers.get((namespace, budget))
        if old is not None and old != provider:
            self.forget_budget(namespace, budget)
        self._budget_providers[(namespace, budget)] = provider
        labels = (budget, namespace, provider)
        self.budget_limit.labels(*labels).set(float(figures.limit))
        self.budget_spent.labels(*labels).set(float(figures.spent))
        self.budget_reserved.labels(*labels).set(float(figures.reserved))
        self.budget_remaining.labels(*labels).set(float(figures.remaining))
        self.budget_utilisation.labels(*labels).set(float(figures.utilisation))
        self.budget_exceeded.labels(*labels).set(1 if figures.exceeded else 0)
        self.budget_last_sync.labels(*labels).set(figures.synced_at)

    def forget_budget(self, namespace: str, budget: str) -> None:
        provider = self._budget_providers.pop((namespace, budget), None)
        if provider is None:
            return
        for gauge in self.budget_gauges:
            with contextlib.suppress(KeyError):
                gauge.remove(budget, namespace, provider)

    def set_route_ready(self, namespace: str, route: str, ready: bool) -> None:
        self.route_ready.labels(route, namespace).set(1 if ready else 0)

    def forget_route(self, namespace: str, route: str) -> None:
        with contextlib.suppress(KeyError):
            self.route_ready.remove(route, namespace)
        self.set_rollout(namespace, route, None)
        for outcome in ROLLOUT_OUTCOMES:
            with contextlib.suppress(KeyError):
                self.rollout_decisions.remove(route, namespace, outcome)

    def set_rollout(self, namespace: str, route: str, state: RouteRolloutStatus | None) -> None:
        """The rollout gauges from ``status.rollout``; ``None`` removes them."""
        if state is None:
            with contextlib.suppress(KeyError):
                self.rollout_weight.remove(route, namespace)
            for phase in ROLLOUT_PHASES:
                with contextlib.suppress(KeyError):
                    self.rollout_phase.remove(route, namespace, phase)
            return
        self.rollout_weight.labels(route, namespace).set(state.weight)
        for phase in ROLLOUT_PHASES:
            self.rollout_phase.labels(route, namespace, phase).set(phase == state.phase)


async def start_metrics_server(
    metrics: OperatorMetrics, host: str, port: int
) -> tuple[web.AppRunner, int]:
    """Serve ``/metrics`` on ``host:port`` (0: any free port); returns the bound port."""

    async def handle(_: web.Request) -> web.Response:
        body = generate_latest(metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/metrics", handle)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    server = site._server
    sockets = getattr(server, "sockets", None) or []
    bound = int(sockets[0].getsockname()[1]) if sockets else port
    return runner, bound
