"""OpenTelemetry spans of the sidecar, read back through a real OpenTelemetry Collector.

The sidecar runs as its own process (``aegis sidecar``) with only the standard
``OTEL_*`` variables pointing it at a collector built from the collector's Go modules
(:mod:`tests.controlplane.otelcol`); the collector forwards over OTLP/HTTP to a
receiver in this test, which decodes the protobuf. Requests come from the official
openai client with a W3C ``traceparent``; the fake providers record the
``traceparent`` they received. Checked: the GenAI attributes and the ``aegis.*`` ones,
the request span as the child of the app's span, one CLIENT child per upstream attempt
(the failed one too), the attempt's context at the provider, and that no prompt or
completion text is anywhere in what was exported.
"""

from __future__ import annotations

import os
import secrets
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from tests.controlplane.otelcol import Collector, CollectorError, Sink, attrs, collector_binary
from tests.sidecar.conftest import Fakes, base_document
from tests.sidecar.shared_helpers import poll_until
from tests.sidecar.sidecar_process import start_sidecar

pytestmark = pytest.mark.slow

PROMPT_MARK = "prompt-text-" + secrets.token_hex(6)
REPLY_MARK = "completion-text-" + secrets.token_hex(6)
SERVICE = "aegis-sidecar-under-test"


@pytest.fixture
def sink() -> Iterator[Sink]:
    received = Sink()
    yield received
    received.close()


@pytest.fixture
def collector(sink: Sink, tmp_path: Path) -> Iterator[Collector]:
    running = Collector(collector_binary(), tmp_path, forward_to=sink.url)
    try:
        running.start()
    except CollectorError as error:
        pytest.fail(str(error), pytrace=False)
    try:
        yield running
    finally:
        running.stop()


def traceparent() -> tuple[str, bytes, bytes]:
    trace_id, span_id = secrets.token_bytes(16), secrets.token_bytes(8)
    return f"00-{trace_id.hex()}-{span_id.hex()}-01", trace_id, span_id


async def test_spans_reach_the_collector_with_genai_attributes_and_fallback_attempts(
    fakes: Fakes, collector: Collector, sink: Sink, tmp_path: Path
) -> None:
    received = sink
    document = base_document(fakes, tmp_path / "ledger.db")
    env = {
        **os.environ,
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_SERVICE_NAME": SERVICE,
        "OTEL_BSP_SCHEDULE_DELAY": "50",
    }
    fakes.openai.knobs.fail_next = 1  # the critical rule's target fails: dashscope answers
    fakes.dashscope.knobs.reply = f"{REPLY_MARK} from the fake"
    fakes.ollama.knobs.reply = f"{REPLY_MARK} streamed"

    proc, port = await start_sidecar(document, tmp_path, env)
    chat_parent, chat_trace, chat_span = traceparent()
    stream_parent, stream_trace, stream_span = traceparent()
    bad_parent, bad_trace, bad_span = traceparent()
    try:
        client = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x")
        raw = await client.chat.completions.with_raw_response.create(
            model="auto",
            messages=[{"role": "user", "content": f"board memo {PROMPT_MARK}"}],
            extra_headers={
                "traceparent": chat_parent,
                "X-Aegis-Quality": "critical",
                "X-Aegis-Complexity": "high",
            },
        )
        answer = raw.parse()
        stream = await client.chat.completions.create(
            model="auto",
            messages=[{"role": "user", "content": f"hello {PROMPT_MARK}"}],
            stream=True,
            stream_options={"include_usage": True},
            extra_headers={"traceparent": stream_parent},
        )
        streamed = [chunk async for chunk in stream]
        await client.embeddings.create(model="auto", input=f"embed {PROMPT_MARK}")
        image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
        system_image: list[Any] = [{"role": "system", "content": [image]}]
        with pytest.raises(openai.BadRequestError):  # images go in user messages only
            await client.chat.completions.create(
                model="auto",
                messages=system_image,
                extra_headers={"traceparent": bad_parent},
            )
        await client.close()

        def complete() -> bool:
            return (
                len(received.of_trace(chat_trace)) == 3
                and len(received.of_trace(stream_trace)) == 2
                and len(received.of_trace(bad_trace)) == 1
                and any(
                    attrs(s).get("gen_ai.operation.name") == "embeddings" for _, s in received.all()
                )
            )

        await poll_until(complete, within=20)
    finally:
        assert proc.pid is not None
        os.kill(proc.pid, signal.SIGTERM)
        await poll_until(lambda: not proc.running, within=30)
        exit_code = proc.returncode
        proc.stop()  # reaps anything left in its process group
    assert exit_code == 0, proc.log_tail()
    assert {service for service, _ in received.all()} == {SERVICE}

    # The non-streamed chat: the request's span, child of the app's span ...
    spans = received.of_trace(chat_trace)
    (request,) = [s for s in spans if s.parent_span_id == chat_span]
    assert request.kind == Span.SPAN_KIND_SERVER
    assert request.name == "chat auto"
    got = attrs(request)
    assert answer.usage is not None
    assert got["gen_ai.operation.name"] == "chat"
    assert got["gen_ai.request.model"] == "auto"
    assert got["gen_ai.response.model"] == answer.model == "qwen-plus"
    assert got["gen_ai.provider.name"] == "dashscope"
    assert got["gen_ai.usage.input_tokens"] == answer.usage.prompt_tokens
    assert got["gen_ai.usage.output_tokens"] == answer.usage.completion_tokens
    assert got["aegis.rule"] == raw.headers["X-Aegis-Rule"] == "critical"
    assert got["aegis.rollout.arm"] == raw.headers["X-Aegis-Arm"]
    assert got["aegis.data_class"] == raw.headers["X-Aegis-Data-Class"]
    assert got["aegis.budget.decision"] == "within"
    assert got["aegis.cost_usd"] == pytest.approx(float(raw.headers["X-Aegis-Cost-USD"]))
    assert got["aegis.cost_usd"] > 0
    assert got["aegis.fallbacks"] == ["openai:status_500"]
    assert got["aegis.attempts"] == 2
    assert got["http.response.status_code"] == 200
    # ... and one CLIENT child per upstream attempt, the failed one first.
    attempts = sorted(
        (s for s in spans if s.parent_span_id == request.span_id),
        key=lambda s: s.start_time_unix_nano,
    )
    assert [s.name for s in attempts] == ["chat gpt-4o", "chat qwen-plus"]
    assert all(s.kind == Span.SPAN_KIND_CLIENT for s in attempts)
    failed, answered = (attrs(s) for s in attempts)
    assert failed["gen_ai.provider.name"] == "openai"
    assert failed["error.type"] == "status_500"
    assert attempts[0].status.code == Status.STATUS_CODE_ERROR
    assert answered["gen_ai.provider.name"] == "dashscope"
    assert answered["gen_ai.response.model"] == "qwen-plus"
    assert answered["gen_ai.usage.output_tokens"] == answer.usage.completion_tokens
    assert answered["server.address"] == "127.0.0.1"
    assert attempts[1].status.code != Status.STATUS_CODE_ERROR
    # Each provider got the context of its own attempt.
    for fake, attempt in ((fakes.openai, attempts[0]), (fakes.dashscope, attempts[1])):
        sent = [
            r["headers"].get("traceparent")
            for r in fake.requests
            if r["path"].endswith("/completions")
        ]
        assert sent == [f"00-{chat_trace.hex()}-{attempt.span_id.hex()}-01"]

    # The stream: usage and the answering model known once it ended.
    spans = received.of_trace(stream_trace)
    (request,) = [s for s in spans if s.parent_span_id == stream_span]
    (attempt,) = [s for s in spans if s.parent_span_id == request.span_id]
    got = attrs(request)
    usage = streamed[-1].usage
    assert usage is not None
    assert got["aegis.stream"] is True
    assert got["gen_ai.provider.name"] == "ollama"
    assert got["gen_ai.usage.output_tokens"] == usage.completion_tokens
    assert attrs(attempt)["gen_ai.response.model"] == got["gen_ai.response.model"] == "gemma3:4b"
    assert attempt.end_time_unix_nano <= request.end_time_unix_nano

    # Embeddings without a traceparent: a trace of its own, rooted at the sidecar.
    (embedding,) = [
        s
        for _, s in received.all()
        if attrs(s).get("gen_ai.operation.name") == "embeddings" and s.kind == Span.SPAN_KIND_SERVER
    ]
    assert embedding.parent_span_id == b""
    assert embedding.name == "embeddings auto"

    # A request refused by intake: its span says why, with the client's status.
    (refused,) = received.of_trace(bad_trace)
    assert refused.parent_span_id == bad_span
    assert attrs(refused)["error.type"] == "invalid_value"
    assert attrs(refused)["http.response.status_code"] == 400
    assert refused.status.code != Status.STATUS_CODE_ERROR  # the client's fault, not ours

    # Never prompt or completion text, in any span, event or resource.
    exported = received.exported()
    assert PROMPT_MARK.encode() not in exported
    assert REPLY_MARK.encode() not in exported
    assert answer.choices[0].message.content and REPLY_MARK in answer.choices[0].message.content
    assert PROMPT_MARK not in collector.log_tail(500)
