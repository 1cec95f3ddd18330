"""``make demo``: the whole data path offline, in one process.

Starts fake OpenAI, DashScope and Ollama upstreams on loopback ports, a sidecar
configured like the origin's setup (with a tiny DashScope budget so exhaustion is
visible), sends requests with the official ``openai`` client, prints each routing
decision from the response headers and finally the ledger report. No network,
no keys: the fakes accept the placeholder keys set here.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .contract import parse_config
from .fakes import FakeUpstream
from .http.server import serve
from .ledger.report import report

# DashScope answers with 1000 words, so a few requests use up the demo's tiny budget.
LONG_REPLY = " ".join(["token"] * 1000)
# A 1x1 PNG, as data URL: enough for the image content-part path.
PIXEL = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk"
    "YPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)


def demo_config(urls: dict[str, str], ledger: Path, dashscope_limit: str = "1") -> bytes:
    """The packaged example pointed at the fakes, with a small DashScope budget."""
    text = resources.files("aegis.sidecar").joinpath("examples/standalone.yaml").read_text()
    document: dict[str, Any] = yaml.safe_load(text)
    for provider in document["providers"]:
        provider["baseURL"] = urls[provider["type"]]
    document["rules"].insert(
        1,
        {
            "name": "public-vision",
            "match": {"vision": True, "dataClass": ["public"]},
            "to": {"provider": "dashscope"},
        },
    )
    for budget in document["budgets"]:
        if budget["provider"] == "dashscope":
            budget["limitUSD"] = dashscope_limit
    document["ledger"] = {"url": f"sqlite+aiosqlite:///{ledger}"}
    return yaml.safe_dump(document, sort_keys=False).encode()


def _line(title: str, headers: Any, extra: str = "") -> None:
    print(
        f"{title:<34} -> provider={headers.get('x-aegis-provider', '-'):<9} "
        f"model={headers.get('x-aegis-model', '-'):<26} "
        f"rule={headers.get('x-aegis-rule', '-'):<13} "
        f"class={headers.get('x-aegis-data-class', '-'):<8} "
        f"cost=${headers.get('x-aegis-cost-usd', '-')}"
        + (f" fallback={headers['x-aegis-fallback']}" if headers.get("x-aegis-fallback") else "")
        + extra
    )


async def run_demo() -> None:
    import openai  # a test extra, not in the image: loaded only when the demo runs

    os.environ.setdefault("OPENAI_API_KEY", "sk-demo")
    os.environ.setdefault("DASHSCOPE_API_KEY", "sk-demo")
    workdir = Path(tempfile.mkdtemp(prefix="aegis-demo-"))
    async with (
        FakeUpstream.start("openai") as fake_openai,
        FakeUpstream.start(
            "dashscope", forbidden_models=["qwen3-vl-30b-a3b-instruct"], reply=LONG_REPLY
        ) as fake_ds,
        FakeUpstream.start("ollama") as fake_ollama,
    ):
        urls = {
            "openai": fake_openai.base_url,
            "dashscope": fake_ds.base_url,
            "ollama": fake_ollama.base_url,
        }
        ledger = workdir / "ledger.db"
        loaded = parse_config(demo_config(urls, ledger), workdir / "config.yaml")
        async with serve(loaded, port=0, metrics_port=0) as sidecar:
            print(f"sidecar on {sidecar.base_url}  (fakes: {', '.join(urls.values())})\n")
            client = openai.AsyncOpenAI(base_url=sidecar.base_url, api_key="unused", max_retries=0)
            chat = client.chat.completions.with_raw_response

            async def ask(
                title: str,
                content: Any,
                max_tokens: int | None = None,
                headers: dict[str, str] | None = None,
            ) -> None:
                raw = await chat.create(
                    model="auto",
                    messages=[{"role": "user", "content": content}],
                    extra_headers=headers or {},
                    max_tokens=openai.omit if max_tokens is None else max_tokens,
                )
                _line(title, raw.headers)

            public = {"X-Aegis-Data-Class": "public"}
            await ask("plain question", "What is a sidecar?")
            await ask(
                "PII detected (e-mail) stays local",
                "Summarise the complaint from jane.doe@example.com",
            )
            await ask(
                "hipaa header stays local", "Patient notes", headers={"X-Aegis-Data-Class": "hipaa"}
            )
            await ask(
                "critical + high -> OpenAI",
                "Draft the board memo",
                headers={"X-Aegis-Quality": "critical", "X-Aegis-Complexity": "high"},
            )
            await ask(
                "critical but PII -> kept local",
                "Call +44 20 7946 0958 about it",
                headers={"X-Aegis-Quality": "critical", "X-Aegis-Complexity": "high"},
            )
            image = [
                {"type": "text", "text": "What is in this picture?"},
                {"type": "image_url", "image_url": {"url": PIXEL}},
            ]
            await ask("vision (instruct 403 -> thinking)", image, 200, public)
            batch = {"X-Aegis-Batch-Size": "12", **public}
            await ask("batch of 12 -> DashScope", "Classify these tickets", 300, batch)
            # Lower the budget below what is spent (as an edited LLMBudget would):
            # the next paid request falls back to the local provider.
            await sidecar.runtime.apply(
                parse_config(demo_config(urls, ledger, "0.001"), workdir / "config.yaml")
            )
            await ask("budget now $0.001: batch -> local", "Classify these tickets", 300, batch)
            stream = await client.chat.completions.create(
                model="auto",
                stream=True,
                messages=[{"role": "user", "content": "Stream a haiku"}],
            )
            pieces = [c.choices[0].delta.content or "" async for c in stream if c.choices]
            print(f"{'stream':<34} -> {len(pieces)} chunks: {''.join(pieces)[:60]!r}")
            await client.close()
        print("\nLedger report:\n")
        print(await report(f"sqlite+aiosqlite:///{ledger}", loaded.config.budgets))


def main() -> int:
    try:
        asyncio.run(run_demo())
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
