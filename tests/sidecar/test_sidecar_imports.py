"""What a sidecar process imports: only what serving uses.

A subprocess does what ``aegis sidecar`` does (the CLI module, ``run_sidecar``'s
module, the event loop and ``serve`` with a production-like config: routing with a
PII rule, a fallback, a priced budget, a SQLite ledger, metrics), and once it is
serving prints every module it has loaded. The operator (kopf, lightkube), pydantic
(the sidecar decodes its config into msgspec Structs), SQLAlchemy (the sidecar
talks to its ledger through the drivers), Alembic, any-llm (no provider of that
type is configured) and the ledger's schema, read and control side must not be
among them: each costs memory in every pod, for nothing.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

PROBE = """
import asyncio, json, sys
from pathlib import Path
import aegis.operator.cli
from aegis.sidecar.commands import run_sidecar
from aegis.sidecar.contract import load_config
from aegis.sidecar.http.server import new_event_loop, serve

async def main(path):
    async with serve(load_config(path), config_path=path, port=0, metrics_port=0) as running:
        assert running.port
        print(json.dumps(sorted(sys.modules)))

with asyncio.Runner(loop_factory=new_event_loop) as runner:
    runner.run(main(Path(sys.argv[1])))
"""

ABSENT_PACKAGES = (
    "sqlalchemy",
    "greenlet",
    "kopf",
    "lightkube",
    "alembic",
    "mako",
    "any_llm",
    "anthropic",
    "openai",
    "asyncpg",
    "pydantic",
    "pydantic_core",
)
# The ledger's SQLAlchemy schema and engines, its read, report and control side
# (``aegis ledger …``, the operator).
READ_SIDE = (
    "models",
    "summary",
    "types",
    "db",
    "migrate",
    "report",
    "spend_report",
    "budget_status",
    "rollout_stats",
    "tables",
    "source",
    "control",
    "roles",
    "partitions",
)


def config(tmp_path: Path, ledger: str | None = None) -> Path:
    document = {
        "identity": {"route": "imports", "namespace": "imports"},
        "providers": [
            {
                "name": "local",
                "type": "ollama",
                "baseURL": "http://127.0.0.1:9",
                "models": {"default": "gemma3:4b"},
            },
            {
                "name": "openai",
                "type": "openai",
                "baseURL": "http://127.0.0.1:9/v1",
                "apiKeyEnv": "IMPORTS_KEY",
                "models": {"default": "gpt-4o-mini"},
            },
        ],
        "rules": [
            {"name": "sensitive", "match": {"dataClass": ["pii"]}, "to": {"provider": "local"}}
        ],
        "default": {"provider": "openai"},
        "fallback": ["local"],
        "budgets": [{"name": "openai", "provider": "openai", "limitUSD": "100"}],
        "ledger": {"url": ledger or f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}"},
        "listen": {"port": 8787, "metricsPort": 9787},  # the probe serves on port 0
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def serving_modules(config: Path, tmp_path: Path) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(config)],
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": "/usr/bin:/bin", "IMPORTS_KEY": "sk-test", "AEGIS_SPOOL_DIR": str(tmp_path)},
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return set(json.loads(out.stdout.splitlines()[-1]))


@pytest.mark.postgres
def test_a_sidecar_on_postgresql_loads_its_driver_and_not_sqlites(
    pg_url: str, tmp_path: Path
) -> None:
    modules = serving_modules(config(tmp_path, pg_url), tmp_path)
    drivers = {name.split(".")[0] for name in modules} & {"asyncpg", "aiosqlite", "sqlalchemy"}
    assert drivers == {"asyncpg"}


def test_a_serving_sidecar_imports_neither_operator_nor_sqlalchemy_nor_the_ledgers_read_side(
    tmp_path: Path,
) -> None:
    modules = serving_modules(config(tmp_path), tmp_path)
    # The probe did serve: the request path and the ledger's write side are loaded.
    assert {
        "aiohttp.web",
        "aegis.sidecar.exchange.answers",
        "aegis.sidecar.ledger.store",
    } <= modules
    loaded = sorted(name for name in modules if name.split(".")[0] in ABSENT_PACKAGES)
    assert loaded == []
    operator = sorted(
        name
        for name in modules
        if name.startswith("aegis.operator.") and name != "aegis.operator.cli"
    )
    assert operator == []
    read_side = sorted(
        name for name in modules if name.rsplit(".", 1)[-1] in READ_SIDE and ".ledger." in name
    )
    assert read_side == []
