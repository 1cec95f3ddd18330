"""LiteLLM's proxy as one more row of the benchmark, when a venv with it is given.

``--litellm /path/to/venv`` (or ``AEGIS_BENCH_LITELLM``): a virtualenv where
``pip install 'litellm[proxy]'`` ran. It is never a dependency of this project. The
proxy gets one model, ``auto``, on the same fake OpenAI upstream as the other proxies,
runs pinned to the same core, and is measured in the same rounds. It runs without a
master key and without a database (its lightest set-up: no key check, no spend
logs), with the bundled price map (no download at start).
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

ENV_VAR = "AEGIS_BENCH_LITELLM"
READY_PATH = "/health/readiness"
ENV = {
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # no fetch of the price map at start
    "LITELLM_LOG": "ERROR",
}


def find_venv(given: str | None) -> Path | None:
    """The venv named on the command line or in ``AEGIS_BENCH_LITELLM``; None when
    neither is set. A venv without the ``litellm`` command is an error."""
    raw = given or os.environ.get(ENV_VAR)
    if not raw:
        return None
    venv = Path(raw).expanduser()
    if not (venv / "bin" / "litellm").exists():
        raise SystemExit(f"{venv}/bin/litellm not found: pip install 'litellm[proxy]' there")
    return venv


def config(upstream: str, workdir: Path) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    doc = {
        "model_list": [
            {
                "model_name": "auto",
                "litellm_params": {
                    "model": "openai/gpt-4o-mini",
                    "api_base": upstream,
                    "api_key": "sk-bench",
                },
            }
        ],
        "litellm_settings": {"telemetry": False},
        "general_settings": {"dangerously_permit_weak_or_unset_master_key": True},
    }
    path = workdir / "litellm.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def command(venv: Path, config_path: Path, port: int) -> list[str]:
    return [
        str(venv / "bin" / "litellm"),
        *("--config", str(config_path), "--host", "127.0.0.1", "--port", str(port)),
    ]
