"""The ``aegis`` command as a user runs it: real processes, real signals."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import openai
import yaml

from tests.sidecar.conftest import Fakes, base_document
from tests.sidecar.shared_helpers import poll_until
from tests.sidecar.sidecar_process import AEGIS, start_sidecar


def run_aegis(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*AEGIS, *args], capture_output=True, text=True, timeout=120, env=env, check=False
    )


def test_help_lists_the_commands() -> None:
    result = run_aegis("--help")
    assert result.returncode == 0
    for command in ("sidecar", "ledger", "fake-upstream", "demo"):
        assert command in result.stdout


def test_invalid_config_exits_2_with_the_field(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"providers": [], "default": {"provider": "x"}}))
    result = run_aegis("sidecar", "--config", str(path))
    assert result.returncode == 2
    assert "providers" in result.stderr


async def test_sidecar_process_then_ledger_report_and_export(fakes: Fakes, tmp_path: Path) -> None:
    document: dict[str, Any] = base_document(fakes, tmp_path / "ledger.db")
    document["budgets"] = [{"name": "openai-monthly", "provider": "openai", "limitUSD": "80"}]
    config = tmp_path / "config.yaml"  # start_sidecar writes it there
    proc, port = await start_sidecar(
        document, tmp_path, env={**os.environ, "AEGIS_LOG_FORMAT": "json"}
    )
    try:
        client = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x")
        await client.chat.completions.create(
            model="auto",
            messages=[{"role": "user", "content": "board memo"}],
            extra_headers={"X-Aegis-Quality": "critical", "X-Aegis-Complexity": "high"},
        )
        await client.chat.completions.create(
            model="auto", messages=[{"role": "user", "content": "hello"}]
        )
        await client.close()
    finally:
        assert proc.pid is not None
        os.kill(proc.pid, signal.SIGTERM)
        await poll_until(lambda: not proc.running, within=30)
        exit_code = proc.returncode
        proc.stop()  # reaps anything left in its process group
    stderr = proc.log_path.read_text()  # stdout and stderr, of every start
    assert exit_code == 0, stderr
    logs = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    assert any("ready on" in entry["message"] for entry in logs)
    assert "board memo" not in stderr  # no prompt text in logs

    report = await asyncio.to_thread(run_aegis, "ledger", "report", "--config", str(config))
    assert report.returncode == 0, report.stderr
    assert "gpt-4o" in report.stdout and "openai-monthly" in report.stdout

    exported = await asyncio.to_thread(
        run_aegis, "ledger", "export", "--config", str(config), "--format", "csv"
    )
    rows = list(csv.DictReader(io.StringIO(exported.stdout)))
    assert sorted(r["provider"] for r in rows) == ["local", "openai"]
    as_json = await asyncio.to_thread(
        run_aegis,
        "ledger",
        "export",
        "--url",
        f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}",
        "--format",
        "json",
        "--month",
        time.strftime("%Y-%m", time.gmtime()),
    )
    assert len(json.loads(as_json.stdout)) == 2
    assert "board memo" not in exported.stdout + as_json.stdout


def test_demo_runs_offline() -> None:
    """The README's demo command: every routing decision it is meant to show."""
    result = subprocess.run(
        [sys.executable, "-m", "aegis.sidecar.demo"],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = {
        line.split("->")[0].strip(): line for line in result.stdout.splitlines() if "->" in line
    }
    assert "provider=local" in lines["PII detected (e-mail) stays local"]
    assert "provider=openai" in lines["critical + high"]
    assert "provider=local" in lines["critical but PII"]
    assert "model=qwen3-vl-30b-a3b-thinking" in lines["vision (instruct 403"]
    assert "provider=dashscope" in lines["batch of 12"]
    assert "fallback=dashscope:budget" in lines["budget now $0.001: batch"]
    assert "chunks" in lines["stream"]
    assert "Ledger report" in result.stdout
