"""Fixtures for sidecar tests: fake upstreams and a running sidecar in this loop."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml

from aegis.sidecar.contract import load_config, parse_config
from aegis.sidecar.fakes import FakeUpstream
from aegis.sidecar.http.server import RunningSidecar, serve

# Suites that run twice, directly on PostgreSQL and through PgBouncer in transaction
# pooling mode (how a thousand sidecars share a few server connections): leases,
# reservations, the spool and its binding, batched writes, and the 16-process
# concurrency test (no money stranded even when lease answers are lost behind a
# pooler whose server connections are all busy).
THROUGH_PGBOUNCER = frozenset(
    {
        "test_lease_sql",
        "test_budget_lease",
        "test_shared_budget",
        "test_month_boundary",
        "test_ledger_postgres",
        "test_ledger_outage",
        "test_spool_identity",
        "test_spool_identity_units",
        "test_ledger_batch_kill",
        "test_budget_concurrency",
    }
)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    module = metafunc.module.__name__.rsplit(".", 1)[-1]
    if "pg_url" in metafunc.fixturenames and module in THROUGH_PGBOUNCER:
        metafunc.parametrize("pg_url", ["direct", "pgbouncer"], indirect=True)


class Fakes:
    def __init__(self, openai_fake: FakeUpstream, dashscope: FakeUpstream, ollama: FakeUpstream):
        self.openai = openai_fake
        self.dashscope = dashscope
        self.ollama = ollama

    def urls(self) -> dict[str, str]:
        return {
            "openai": self.openai.base_url,
            "dashscope": self.dashscope.base_url,
            "ollama": self.ollama.base_url,
        }


@pytest.fixture
async def fakes(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Fakes]:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-openai")
    monkeypatch.setenv("DASHSCOPE_API_KEY", "sk-test-dashscope")
    async with (
        FakeUpstream.start("openai") as fake_openai,
        FakeUpstream.start("dashscope") as fake_dashscope,
        FakeUpstream.start("ollama") as fake_ollama,
    ):
        yield Fakes(fake_openai, fake_dashscope, fake_ollama)


def base_document(fakes: Fakes, ledger: Path) -> dict[str, Any]:
    """The origin's route pointed at the fakes (a plain dict tests can edit)."""
    return {
        "identity": {"route": "rag-api", "namespace": "tests"},
        "providers": [
            {
                "name": "local",
                "type": "ollama",
                "baseURL": fakes.ollama.base_url,
                "models": {
                    "default": "gemma3:4b",
                    "vision": ["qwen2.5vl:7b"],
                    "embedding": "nomic-embed-text:latest",
                },
            },
            {
                "name": "dashscope",
                "type": "dashscope",
                "baseURL": fakes.dashscope.base_url,
                "apiKeyEnv": "DASHSCOPE_API_KEY",
                "models": {
                    "default": "qwen-plus",
                    "vision": ["qwen3-vl-30b-a3b-instruct", "qwen3-vl-30b-a3b-thinking"],
                    "embedding": "text-embedding-v4",
                },
                "maxRetries": 0,
            },
            {
                "name": "openai",
                "type": "openai",
                "baseURL": fakes.openai.base_url,
                "apiKeyEnv": "OPENAI_API_KEY",
                "models": {
                    "default": "gpt-4o-mini",
                    "vision": ["gpt-4o"],
                    "embedding": "text-embedding-3-small",
                },
                "maxRetries": 0,
            },
        ],
        "rules": [
            {
                "name": "sensitive",
                "match": {"dataClass": ["pii", "hipaa", "confidential"]},
                "to": {"provider": "local"},
            },
            {
                "name": "critical",
                "match": {"quality": ["critical"], "complexity": ["high"]},
                "to": {"provider": "openai", "model": "gpt-4o"},
            },
            {"name": "batch", "match": {"minBatchSize": 11}, "to": {"provider": "dashscope"}},
        ],
        "default": {"provider": "local"},
        "fallback": ["dashscope", "local"],
        "budgets": [],
        "ledger": {"url": f"sqlite+aiosqlite:///{ledger}"},
    }


SidecarFactory = Callable[..., AbstractAsyncContextManager[RunningSidecar]]


@pytest.fixture
def make_sidecar(fakes: Fakes, tmp_path: Path) -> SidecarFactory:
    """``async with make_sidecar(edit) as sc`` runs a sidecar on a free port.

    ``edit`` receives the base document (a deep copy) and may change it in place.
    """

    @asynccontextmanager
    async def factory(
        edit: Callable[[dict[str, Any]], None] | None = None,
        *,
        config_path: Path | None = None,
        reload_interval: float = 0.05,
    ) -> AsyncIterator[RunningSidecar]:
        document = copy.deepcopy(base_document(fakes, tmp_path / "ledger.db"))
        if edit is not None:
            edit(document)
        raw = yaml.safe_dump(document).encode()
        path = config_path or tmp_path / "config.yaml"
        if path.is_dir():  # a mounted ConfigMap the test prepared
            loaded = load_config(path)
        else:
            path.write_bytes(raw)
            loaded = parse_config(raw, path)
        async with serve(
            loaded,
            config_path=path if config_path is not None else None,
            port=0,
            metrics_port=0,
            reload_interval=reload_interval,
            shutdown_timeout=1.0,
        ) as running:
            yield running

    return factory


def client_for(running: RunningSidecar) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=running.base_url, api_key="unused", max_retries=0)
