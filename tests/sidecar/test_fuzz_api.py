"""Property-based fuzzing of every endpoint of the sidecar's API.

Requests that are not JSON, not UTF-8, nested deeply, huge, holding lone
surrogates or NUL characters, with wrong types in any field, and every tag header
valid, hostile or repeated. Upstreams are healthy, so whatever the answer, it is
the request's doing, and the invariant is: never a 5xx; every 4xx in the
endpoint's own error shape (OpenAI's, Anthropic's on ``/v1/messages``) naming the
field; the sidecar healthy after each example, no reservation left open and its
memory bounded at the end.

``make test`` runs a fixed seed (``derandomize``) and a budget of examples per
endpoint that keeps the module well under two minutes; ``make fuzz`` runs
``AEGIS_FUZZ_EXAMPLES`` random examples per endpoint and writes what it tried
and found to ``build/fuzz-report.json``.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.sidecar.fuzz_support import (
    PATHS,
    Reply,
    Served,
    bodies,
    check_reply,
    exchange,
    header_sets,
    rss_bytes,
    served_sidecar,
)

EXAMPLES = int(os.environ.get("AEGIS_FUZZ_EXAMPLES", "300"))
LONG_RUN = "AEGIS_FUZZ_EXAMPLES" in os.environ
REPORT = Path(os.environ.get("AEGIS_FUZZ_REPORT", "build/fuzz-report.json"))
FUZZ = settings(
    max_examples=EXAMPLES,
    derandomize=not LONG_RUN,
    database=None,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
)
TRIED: Counter[str] = Counter()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with served_sidecar(tmp_path_factory.mktemp("fuzz")) as sidecar:
        yield sidecar
    if LONG_RUN:
        REPORT.parent.mkdir(parents=True, exist_ok=True)
        REPORT.write_text(json.dumps({"examples_per_endpoint": EXAMPLES, "tried": TRIED}, indent=1))


def error_code(reply: Reply) -> str:
    """The error's code (OpenAI) or type (Anthropic), for the report."""
    if reply.status < 400 or not reply.content_type.startswith("application/json"):
        return ""
    error = json.loads(reply.body).get("error") or {}
    return str(error.get("code") or error.get("type") or "")


def healthy(served: Served) -> None:
    reply = exchange(served.port, "GET", "/healthz", None, [])
    assert reply.status == 200, "the sidecar is no longer healthy"
    assert served.running.runtime.budgets.outstanding == 0


@pytest.mark.parametrize("api", list(PATHS))
@FUZZ
@given(data=st.data())
def test_no_request_gets_a_5xx(served: Served, api: str, data: st.DataObject) -> None:
    body = data.draw(bodies(api), label="body")
    headers = data.draw(header_sets(), label="headers")
    reply = exchange(served.port, "POST", PATHS[api], body, headers)
    TRIED[f"{api} {reply.status} {error_code(reply)}".rstrip()] += 1
    check_reply(api, reply)
    healthy(served)


@FUZZ
@given(headers=header_sets(), query=st.text(max_size=30))
def test_models_and_unknown_paths(
    served: Served, headers: list[tuple[str, bytes]], query: str
) -> None:
    for method, path in (("GET", "/v1/models"), ("GET", "/v1/nope"), ("DELETE", "/v1/messages")):
        reply = exchange(served.port, method, path, None, headers)
        TRIED[f"{path} {reply.status}"] += 1
        check_reply("messages" if path.startswith("/v1/messages") else "models", reply)
    healthy(served)


def test_memory_stays_bounded(served: Served) -> None:
    """After every example above (module order), a burst of the largest bodies the
    sidecar accepts leaves its memory where it was, give or take its caches."""
    big = json.dumps(
        {"model": "auto", "messages": [{"role": "user", "content": "word " * 40_000}]}
    ).encode()
    headers = [("Content-Type", b"application/json")]
    for _ in range(5):
        exchange(served.port, "POST", PATHS["chat"], big, headers)
    before = rss_bytes()
    for _ in range(40):
        assert exchange(served.port, "POST", PATHS["chat"], big, headers).status == 200
    assert rss_bytes() - before < 64 * 1024 * 1024
    healthy(served)
