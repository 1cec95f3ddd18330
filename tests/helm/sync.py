"""Files derived from one source, and the command that rewrites them.

``python -m tests.helm.sync`` (``make chart-sync``) writes:

- ``helm/aegis/files/crds/*.yaml``: byte-for-byte copies of ``crds/*.yaml`` (Helm cannot
  read files outside the chart directory, and a symlink would not survive packaging);
- ``helm/aegis/files/operator-rbac.yaml``: a copy of ``operator/rbac.yaml``, the
  operator's documented minimal rules, which the chart's ClusterRole reads;
- ``helm/prometheus/aegis.rules.yaml``: the chart's alert rule groups rendered with the
  default values, as a plain Prometheus rules file (``promtool`` checks and tests it);
- ``docs/metrics.md``: every metric the sidecar and the operator export, from their
  registries.

The tests in ``tests/helm`` compute the same content and fail, naming this command,
when a committed copy differs.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "aegis"
CRDS = ROOT / "crds"
CHART_CRDS = CHART / "files" / "crds"
OPERATOR_RBAC = ROOT / "operator" / "rbac.yaml"
CHART_OPERATOR_RBAC = CHART / "files" / "operator-rbac.yaml"
RULES = ROOT / "helm" / "prometheus" / "aegis.rules.yaml"
RULE_TESTS = ROOT / "helm" / "prometheus" / "aegis.rules.test.yaml"
DASHBOARD = CHART / "files" / "dashboards" / "aegis.json"
METRICS_DOC = ROOT / "docs" / "metrics.md"
COMMAND = "python -m tests.helm.sync"


# -- helm ----------------------------------------------------------------------------------
def helm_binary() -> str:
    """The pinned helm of the test bed (``$AEGIS_HELM`` overrides), built when missing."""
    configured = os.environ.get("AEGIS_HELM")
    if configured:
        return configured
    from tests.controlplane import build

    return str(build.ensure(["helm"]).helm)


def helm_env(home: Path) -> dict[str, str]:
    """A private helm home, so nothing reads or writes the developer's helm config."""
    return {
        **os.environ,
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
    }


def render(helm: str, home: Path, *args: str) -> list[dict[str, Any]]:
    """``helm template aegis helm/aegis ARGS`` as a list of objects."""
    done = subprocess.run(
        [helm, "template", "aegis", str(CHART), "--namespace", "aegis-system", *args],
        capture_output=True,
        text=True,
        env=helm_env(home),
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"helm template failed:\n{done.stderr}")
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


# -- CRD copies ----------------------------------------------------------------------------
def crd_sources() -> dict[str, bytes]:
    """``crds/*.yaml`` (the examples folder is not part of the chart)."""
    return {path.name: path.read_bytes() for path in sorted(CRDS.glob("*.yaml"))}


# -- plain Prometheus rules ----------------------------------------------------------------
class _BlockDumper(yaml.SafeDumper):
    """Multi-line strings (PromQL) as literal blocks, the way people write rules files."""


def _str_presenter(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _str_presenter)


def rule_groups(helm: str, home: Path) -> dict[str, Any]:
    """The ``spec`` of the chart's PrometheusRule with default thresholds."""
    docs = render(
        helm,
        home,
        "--set",
        "monitoring.prometheusRule.enabled=true",
        "--show-only",
        "templates/prometheusrule.yaml",
    )
    (rule,) = docs
    spec: dict[str, Any] = rule["spec"]
    return spec


def rules_file(helm: str, home: Path) -> str:
    header = (
        "# Aegis alert rules for Prometheus without the Prometheus Operator.\n"
        "# Generated from helm/aegis/templates/_rules.tpl with the chart's default values\n"
        f"# by `{COMMAND}`; do not edit (change the template or the values and regenerate).\n"
        "# Load it with rule_files: in prometheus.yml; unit tests: aegis.rules.test.yaml.\n"
    )
    body = yaml.dump(rule_groups(helm, home), Dumper=_BlockDumper, sort_keys=False, width=1000)
    return header + body


# -- the metrics reference -----------------------------------------------------------------
@dataclass(frozen=True)
class MetricInfo:
    component: str
    name: str
    type: str
    help: str
    labels: tuple[str, ...]

    @property
    def series(self) -> tuple[str, ...]:
        """Names of the series Prometheus stores for this metric."""
        if self.type == "counter":
            return (f"{self.name}_total", f"{self.name}_created")
        if self.type == "histogram":
            return tuple(f"{self.name}{s}" for s in ("_bucket", "_sum", "_count", "_created"))
        if self.type == "summary":
            return (self.name, f"{self.name}_sum", f"{self.name}_count", f"{self.name}_created")
        return (self.name,)

    @property
    def exposed_name(self) -> str:
        return f"{self.name}_total" if self.type == "counter" else self.name


def _collectors(holder: object) -> Iterator[MetricWrapperBase]:
    for value in vars(holder).values():
        if isinstance(value, MetricWrapperBase):
            yield value


def registries() -> list[tuple[str, CollectorRegistry, list[MetricWrapperBase]]]:
    """Each component's registry, with its metric objects (for their label names)."""
    from aegis.operator.injector.metrics import InjectorMetrics
    from aegis.operator.metrics import OperatorMetrics
    from aegis.sidecar.metrics import SidecarMetrics

    sidecar, operator, injector = SidecarMetrics(), OperatorMetrics(), InjectorMetrics()
    return [
        ("sidecar", sidecar.registry, list(_collectors(sidecar))),
        ("operator", operator.registry, list(_collectors(operator))),
        ("injector", injector.registry, list(_collectors(injector))),
    ]


def exported_metrics() -> list[MetricInfo]:
    """Every metric family the code registers, read from the registries themselves."""
    from aegis.sidecar.metrics import CONSTANT_LABELS

    found: list[MetricInfo] = []
    for component, registry, collectors in registries():
        labels = {c._name: tuple(c._labelnames) for c in collectors}
        for family in registry.collect():
            names = labels.get(family.name, ())
            if component == "sidecar":  # added to every series as it is served
                names = (*CONSTANT_LABELS, *(n for n in names if n not in CONSTANT_LABELS))
            found.append(
                MetricInfo(
                    component=component,
                    name=family.name,
                    type=family.type,
                    help=family.documentation,
                    labels=names,
                )
            )
    return found


def metrics_doc() -> str:
    lines = [
        "# Metrics",
        "",
        "Generated from the metric registries of the sidecar (`sidecar/metrics.py`), the",
        "operator (`operator/metrics.py`) and the injector (`operator/injector/metrics.py`)",
        f"by `{COMMAND}`; do not edit. A test keeps it current.",
        "",
        "Sidecars serve these on their metrics port (`/metrics`); the chart's PodMonitor",
        "scrapes them, the ServiceMonitors scrape the operator and the injector. The alert",
        "rules (`helm/prometheus/aegis.rules.yaml`) and the Grafana dashboard",
        "(`helm/aegis/files/dashboards/aegis.json`) use only the series listed here.",
        "",
        "Every sidecar series carries `namespace` and `route`: one sidecar serves one route",
        "in one namespace, so both are constant per process and add no series. Scraped by",
        "the chart's PodMonitor (`honorLabels: false`), the pod's own `namespace` target",
        "label wins and the sidecar's (the same value) is dropped; `route` is kept.",
        "",
    ]
    by_component: dict[str, list[MetricInfo]] = {}
    for metric in exported_metrics():
        by_component.setdefault(metric.component, []).append(metric)
    for component, metrics in by_component.items():
        lines += [
            f"## {component.capitalize()}",
            "",
            "| series | type | labels | description |",
            "|---|---|---|---|",
        ]
        for m in sorted(metrics, key=lambda m: m.name):
            labels = ", ".join(f"`{label}`" for label in m.labels) or "—"
            lines.append(f"| `{m.exposed_name}` | {m.type} | {labels} | {m.help} |")
        lines.append("")
    return "\n".join(lines)


# -- everything ----------------------------------------------------------------------------
def copies() -> dict[Path, bytes]:
    """The chart's copies of files outside it, with the content they must have."""
    files = {CHART_CRDS / name: data for name, data in crd_sources().items()}
    files[CHART_OPERATOR_RBAC] = OPERATOR_RBAC.read_bytes()
    return files


def generated(helm: str, home: Path) -> dict[Path, bytes]:
    """Files generated from the chart (with the copies in place) and from the code."""
    return {RULES: rules_file(helm, home).encode(), METRICS_DOC: metrics_doc().encode()}


def stale_copies() -> list[Path]:
    """CRD copies in the chart whose source is gone."""
    sources = set(crd_sources())
    return [p for p in sorted(CHART_CRDS.glob("*.yaml")) if p.name not in sources]


def _write(files: dict[Path, bytes]) -> None:
    for path, data in files.items():
        if path.exists() and path.read_bytes() == data:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        print(f"wrote {path.relative_to(ROOT)}")


def main() -> int:
    import tempfile

    for path in stale_copies():
        path.unlink()
        print(f"removed {path.relative_to(ROOT)}")
    _write(copies())
    with tempfile.TemporaryDirectory(prefix="aegis-helm-") as home:
        _write(generated(helm_binary(), Path(home)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
