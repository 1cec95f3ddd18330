"""Rendering the chart offline, and the values that switch every optional feature on."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.helm import sync

#: Every optional feature of the chart switched on (what `helm template` must render).
ALL_FEATURES: dict[str, Any] = {
    "postgresql": {"enabled": True},
    "certManager": {"enabled": True},
    "monitoring": {
        "podMonitor": {"enabled": True},
        "serviceMonitor": {"enabled": True},
        "prometheusRule": {"enabled": True},
        "dashboard": {"enabled": True},
    },
    "commonLabels": {"team": "platform"},
    "imagePullSecrets": [{"name": "registry"}],
}


@dataclass
class Helm:
    """The pinned helm binary with a private home, for offline commands."""

    binary: str
    home: Path

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [self.binary, *args],
            capture_output=True,
            text=True,
            env=sync.helm_env(self.home),
            timeout=120,
            check=False,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
        return done

    def template(
        self, *args: str, values: dict[str, Any] | None = None, namespace: str = "aegis-system"
    ) -> list[dict[str, Any]]:
        """``helm template aegis helm/aegis`` with ``values`` (as a values file) and ARGS."""
        extra: list[str] = []
        if values is not None:
            path = self.home / f"values-{abs(hash(json.dumps(values, sort_keys=True)))}.yaml"
            path.write_text(yaml.safe_dump(values))
            extra = ["-f", str(path)]
        done = self.run("template", "aegis", str(sync.CHART), "-n", namespace, *extra, *args)
        return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def objects_by_kind(docs: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    kinds: dict[str, list[dict[str, Any]]] = {}
    for doc in docs:
        kinds.setdefault(doc["kind"], []).append(doc)
    return kinds


def one(docs: list[dict[str, Any]], kind: str, name_suffix: str = "") -> dict[str, Any]:
    """The single object of ``kind`` whose name ends with ``name_suffix``."""
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].endswith(name_suffix)]
    assert len(found) == 1, f"{kind} *{name_suffix}: {[d['metadata']['name'] for d in found]}"
    return found[0]
