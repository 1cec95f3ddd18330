"""What the API fuzz tests share: a sidecar served from a thread, raw HTTP, the
request strategies and the invariant every answer must hold.

The sidecar and its fake upstreams run in their own event loop on a thread, so
hypothesis drives plain synchronous tests and each example is one raw HTTP
exchange (``http.client``: any bytes as body and header values, nothing fixed up
by a client library).
"""

from __future__ import annotations

import asyncio
import copy
import http.client
import json
import os
import re
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from hypothesis import strategies as st

from aegis.sidecar.contract import parse_config
from aegis.sidecar.fakes import FakeUpstream
from aegis.sidecar.http.server import RunningSidecar, serve
from tests.controlplane.procs import memory_kib
from tests.sidecar.conftest import Fakes, base_document

MAX_BODY = 256 * 1024
KEYS = {
    "OPENAI_API_KEY": "sk-fuzz-openai",
    "DASHSCOPE_API_KEY": "sk-fuzz-dashscope",
    "ANTHROPIC_API_KEY": "sk-ant-fuzz",
}


@dataclass
class Served:
    """A sidecar running on a thread's loop."""

    running: RunningSidecar
    loop: asyncio.AbstractEventLoop
    statuses: Counter[str] = field(default_factory=Counter)

    @property
    def port(self) -> int:
        return self.running.port

    def call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=60)


def fuzz_document(fakes: Fakes, claude: FakeUpstream, ledger: Path) -> dict[str, Any]:
    """The test route, plus Anthropic's wire for ``X-Aegis-Quality: low`` (so that
    hostile fields also go through the Messages translation upstream)."""
    document = copy.deepcopy(base_document(fakes, ledger))
    document["providers"].append(
        {
            "name": "claude",
            "type": "anthropic",
            "baseURL": claude.base_url,
            "apiKeyEnv": "ANTHROPIC_API_KEY",
            "models": {"default": "claude-haiku-4-5", "vision": ["claude-sonnet-4-5"]},
            "maxRetries": 0,
        }
    )
    document["rules"].insert(
        1, {"name": "cheap", "match": {"quality": ["low"]}, "to": {"provider": "claude"}}
    )
    document["budgets"] = [{"name": "ds", "provider": "dashscope", "limitUSD": "1000"}]
    document["listen"] = {"maxBodyBytes": MAX_BODY, "limits": {"maxJsonDepth": 32}}
    return document


@contextmanager
def served_sidecar(tmp: Path) -> Iterator[Served]:
    """Fakes and a sidecar on a thread of their own until the block ends."""
    saved = {name: os.environ.get(name) for name in KEYS}
    os.environ.update(KEYS)
    ready: list[Served] = []
    started = threading.Event()
    failure: list[BaseException] = []
    stop: list[asyncio.Event] = []

    async def main() -> None:
        async with (
            FakeUpstream.start("openai") as openai_fake,
            FakeUpstream.start("dashscope") as dashscope,
            FakeUpstream.start("ollama") as ollama,
            FakeUpstream.start("anthropic") as claude,
        ):
            fakes = Fakes(openai_fake, dashscope, ollama)
            document = fuzz_document(fakes, claude, tmp / "ledger.db")
            raw = yaml.safe_dump(document).encode()
            loaded = parse_config(raw, tmp / "config.yaml")
            async with serve(loaded, port=0, metrics_port=0, shutdown_timeout=1.0) as running:
                stop.append(asyncio.Event())
                ready.append(Served(running, asyncio.get_running_loop()))
                started.set()
                await stop[0].wait()

    def run() -> None:
        try:
            asyncio.run(main())
        except BaseException as error:  # reported to the test below
            failure.append(error)
        finally:
            started.set()

    thread = threading.Thread(target=run, name="fuzzed-sidecar", daemon=True)
    thread.start()
    started.wait(60)
    try:
        if failure or not ready:
            raise RuntimeError(f"the sidecar did not start: {failure}")
        yield ready[0]
    finally:
        if ready:
            ready[0].loop.call_soon_threadsafe(stop[0].set)
        thread.join(30)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@dataclass(frozen=True)
class Reply:
    status: int
    content_type: str
    body: bytes


def exchange(
    port: int, method: str, path: str, body: bytes | None, headers: list[tuple[str, bytes]]
) -> Reply:
    """One raw HTTP request on a fresh connection."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.putrequest(method, path, skip_accept_encoding=True)
        for name, value in headers:
            connection.putheader(name, value)
        if body is not None:
            connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body)
        response = connection.getresponse()
        return Reply(response.status, response.getheader("Content-Type") or "", response.read())
    finally:
        connection.close()


def rss_bytes() -> int:
    return memory_kib(os.getpid()).get("VmRSS", 0) * 1024


# -- strategies ------------------------------------------------------------------------

SPECIAL_STRINGS = st.sampled_from(
    [
        "\ud800",
        "\udfff",
        "a\ud83d",
        "\x00",
        "a\x00b",
        "",
        " ",
        "é",
        "😀",
        "\u202e",
        "\ufeff",
        "null",
        "{}",
        "auto",
        "openai/gpt-4o",
        "dashscope/qwen-plus",
        "local/unknown",
    ]
) | st.integers(min_value=10_000, max_value=30_000).map(lambda n: "x" * n)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**40), max_value=10**40)  # beyond Decimal precision
    | st.floats()
    | st.text(max_size=40)
    | SPECIAL_STRINGS
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=12) | SPECIAL_STRINGS, inner, max_size=4)
    ),
    max_leaves=12,
)

USER = {"role": "user", "content": "hello"}
TEMPLATES: dict[str, dict[str, Any]] = {
    "chat": {"model": "auto", "messages": [USER], "max_tokens": 16},
    "embeddings": {"model": "auto", "input": "hello"},
    "responses": {"model": "auto", "input": "hello", "max_output_tokens": 16},
    "messages": {"model": "auto", "max_tokens": 16, "messages": [USER]},
}
# Fields each API knows, present or not in the template: mutation targets.
FIELDS: dict[str, list[str]] = {
    "chat": [
        "model",
        "messages",
        "max_tokens",
        "max_completion_tokens",
        "stream",
        "stream_options",
        "n",
        "temperature",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "logit_bias",
        "response_format",
        "stop",
        "user",
        "metadata",
        "seed",
        "messages.0",
        "messages.0.role",
        "messages.0.content",
        "messages.0.content.0",
        "messages.0.name",
        "messages.0.tool_calls",
    ],
    "embeddings": ["model", "input", "encoding_format", "dimensions", "user", "input.0"],
    "responses": [
        "model",
        "input",
        "instructions",
        "max_output_tokens",
        "stream",
        "tools",
        "tool_choice",
        "text",
        "metadata",
        "previous_response_id",
        "store",
        "temperature",
        "input.0",
        "input.0.content",
    ],
    "messages": [
        "model",
        "messages",
        "system",
        "max_tokens",
        "stream",
        "stop_sequences",
        "tools",
        "tool_choice",
        "temperature",
        "metadata",
        "thinking",
        "messages.0",
        "messages.0.role",
        "messages.0.content",
        "messages.0.content.0",
    ],
}
PATHS = {
    "chat": "/v1/chat/completions",
    "embeddings": "/v1/embeddings",
    "responses": "/v1/responses",
    "messages": "/v1/messages",
}
TAG_HEADERS = {
    "X-Aegis-Data-Class": ["public", "internal", "pii", "hipaa", "confidential"],
    "X-Aegis-Quality": ["standard", "critical", "low", "low", "LOW"],
    "X-Aegis-Complexity": ["low", "medium", "high"],
    "X-Aegis-Batch-Size": ["1", "20", "1000000"],
    "X-Aegis-User": ["alice", "bob"],
    "anthropic-version": ["2023-06-01"],
}
# Header value bytes as HTTP allows them (tab, visible ASCII, and obs-text: any
# byte from 0x80, so not necessarily UTF-8). Control characters are refused by the
# HTTP parser itself with a plain 400 before any endpoint is reached.
_CONTROL = bytes(range(0x20)).replace(b"\t", b"") + b"\x7f"
HEADER_BYTES = st.binary(max_size=300).map(lambda b: b.translate(None, _CONTROL).strip())


def _set(document: dict[str, Any], path: str, value: Any, delete: bool) -> None:
    """Set (or delete) ``path`` (dotted; digits index arrays) where it can be reached."""
    target: Any = document
    steps = path.split(".")
    for step in steps[:-1]:
        if isinstance(target, list) and step.isdigit() and int(step) < len(target):
            target = target[int(step)]
        elif isinstance(target, dict) and step in target:
            target = target[step]
        else:
            return
    last = steps[-1]
    if isinstance(target, dict):
        if delete:
            target.pop(last, None)
        else:
            target[last] = value
    elif isinstance(target, list) and last.isdigit() and int(last) < len(target):
        if delete:
            del target[int(last)]
        else:
            target[int(last)] = value


@st.composite
def bodies(draw: st.DrawFn, api: str) -> bytes:
    """A request body for ``api``: mostly a valid body with some fields made
    hostile, else bytes that are not UTF-8 or not JSON, nesting, or sheer size."""
    kind = draw(
        st.sampled_from(
            ["mutated"] * 6 + ["raw", "truncated", "deep", "huge", "cesu", "nonobject", "valid"]
        )
    )
    document = copy.deepcopy(TEMPLATES[api])
    if kind == "raw":
        return draw(st.binary(max_size=512))
    if kind == "nonobject":
        return json.dumps(draw(VALUES)).encode()
    if kind == "deep":
        depth = draw(st.integers(min_value=30, max_value=100_000))
        opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}")]))
        nested = opener * depth + "1" + closer * depth
        field = draw(st.sampled_from(FIELDS[api]).filter(lambda f: "." not in f))
        text = json.dumps(document)[:-1] + f', "{field}": {nested}}}'
        return text.encode()
    if kind == "huge":
        _set(document, draw(st.sampled_from(FIELDS[api])), "x" * (MAX_BODY + 1024), False)
        return json.dumps(document).encode()
    for _ in range(draw(st.integers(min_value=1, max_value=3)) if kind != "valid" else 0):
        path = draw(st.sampled_from(FIELDS[api]))
        _set(document, path, draw(VALUES), draw(st.integers(0, 9)) == 0)
    if kind == "cesu":  # lone surrogates as (invalid) UTF-8 bytes rather than escapes
        return json.dumps(document, ensure_ascii=False).encode("utf-8", "surrogatepass")
    text = json.dumps(document, ensure_ascii=draw(st.booleans()))
    if kind == "truncated":
        return text[: draw(st.integers(min_value=0, max_value=max(0, len(text) - 1)))].encode(
            "utf-8", "surrogatepass"
        )
    return text.encode("utf-8", "surrogatepass")


@st.composite
def header_sets(draw: st.DrawFn) -> list[tuple[str, bytes]]:
    """Content-Type (mostly JSON) and any of the tag headers: valid, hostile, repeated."""
    headers: list[tuple[str, bytes]] = []
    content_type = draw(
        st.sampled_from(
            [b"application/json"] * 6 + [b"", b"text/plain", b"application/x+json", b"\xff"]
        )
    )
    if content_type:
        headers.append(("Content-Type", content_type))
    hostile = draw(st.integers(min_value=0, max_value=9)) < 3  # else valid tags only
    for name, valid in TAG_HEADERS.items():
        choice = draw(st.integers(min_value=0, max_value=5 if hostile else 3))
        if choice <= 1:
            continue
        if choice <= 3:
            value = draw(st.sampled_from(valid)).encode()
            headers.append((name, value))
        elif choice == 4:
            headers.append((name, draw(HEADER_BYTES)))
        else:
            value = draw(st.sampled_from(valid)).encode()
            headers += [(name, value), (name, value)]
    return headers


# -- the invariant ------------------------------------------------------------------------

FIELD_CODES = frozenset(
    {
        "invalid_type",
        "invalid_value",
        "missing_required_parameter",
        "unknown_parameter",
        "unsupported_parameter",
        "empty_array",
        "array_above_max_length",
        "invalid_header",
    }
)


def check_reply(api: str, reply: Reply) -> None:
    """No 5xx; every 4xx in the endpoint's error shape, naming the field it is about."""
    assert reply.status < 500, f"{reply.status} for a request alone: {reply.body[:500]!r}"
    if reply.status < 400:
        if reply.content_type.startswith("text/event-stream"):  # ended well, not broken
            for broken in (b"event: error", b"response.failed", b"upstream_stream_interrupted"):
                assert broken not in reply.body, reply.body[-500:]
        return
    assert reply.content_type.startswith("application/json"), reply.content_type
    payload = json.loads(reply.body)
    if api == "messages":
        assert payload["type"] == "error"
        assert set(payload["error"]) == {"type", "message"}
        assert payload["error"]["message"]
        return
    error = payload["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    if error["code"] in FIELD_CODES:  # about one field: which one, in param or message
        if error["param"] is not None:
            assert error["param"][:40] in error["message"], error
        else:
            assert re.search(r"'[^']+'", error["message"]), error
