"""What the product tests read back: the platform team's view of the route and budgets,
the request ids of answered calls, a metric's sum in a Prometheus page, and the rows
of given requests in the release's PostgreSQL ledger."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tests.controlplane.procs import wait_until
from tests.node.product import NS
from tests.node.release import Release

if TYPE_CHECKING:
    from tests.node.conftest import NodeCluster


def platform_view(cluster: NodeCluster) -> str:
    return cluster.kube.kubectl("-n", NS, "get", "llmroutes,llmbudgets").stdout


def answered_ids(results: list[dict[str, Any]]) -> list[str]:
    return [r["headers"]["x-aegis-request-id"] for r in results if r["status"] == 200]


def metric_sum(text: str, name: str) -> float:
    """The sum of a metric's samples in a Prometheus text page (0 when absent)."""
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith((f"{name} ", f"{name}{{"))
    )


def ledger_has(release: Release, ids: list[str]) -> int:
    quoted = ",".join(f"'{i}'" for i in ids)
    return int(
        release.psql(f"SELECT count(*) FROM aegis.ledger_entries WHERE request_id IN ({quoted})")
    )


def wait_in_ledger(release: Release, ids: list[str], timeout: float = 60) -> None:
    wait_until(
        lambda: ledger_has(release, ids) == len(ids),
        timeout=timeout,
        what=f"{len(ids)} rows in the Postgres ledger",
        interval=1,
    )
