"""Chat completions answered as OpenAI Responses ``response`` objects.

Shared by the whole answer and the stream: the response object (the request's
echoed fields, status, output and usage) and the output items (an assistant
``message`` with ``output_text`` / ``refusal`` parts, one ``function_call`` per
tool call). Ids are derived from the ledger row's request id, so an answer can
be found in the ledger: ``resp_<id>``, ``msg_<id>``, ``fc_<id>_<n>``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from .chunks import completion_parts, usage_counts

# finish_reason -> the Responses status and incomplete reason.
_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


def response_object(
    echo: Mapping[str, Any],
    *,
    request_id: str,
    model: str,
    created_at: int,
    status: str,
    output: list[dict[str, Any]],
    usage: dict[str, Any] | None = None,
    finish: str | None = None,
    error: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    reason = _INCOMPLETE.get(finish or "")
    return {
        "id": f"resp_{request_id}",
        "object": "response",
        "created_at": created_at,
        "status": status,
        "background": False,
        "error": dict(error) if error else None,
        "incomplete_details": {"reason": reason} if status == "incomplete" and reason else None,
        "model": model,
        "output": output,
        "previous_response_id": None,
        "store": False,
        "usage": usage,
        **echo,
    }


def final_status(finish: str | None) -> str:
    """``completed``, or ``incomplete`` when the cap or a content filter cut the answer."""
    return "incomplete" if finish in _INCOMPLETE else "completed"


def usage_object(
    prompt: int, completion: int, cached: int = 0, reasoning: int = 0
) -> dict[str, Any]:
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": prompt + completion,
    }


def message_item(
    request_id: str, status: str, content: list[dict[str, Any]], n: int = 0
) -> dict[str, Any]:
    """The assistant message (``n`` > 0: a later one of the same answer)."""
    return {
        "type": "message",
        "id": f"msg_{request_id}" + (f"_{n}" if n else ""),
        "status": status,
        "role": "assistant",
        "content": content,
    }


def text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def refusal_part(text: str) -> dict[str, Any]:
    return {"type": "refusal", "refusal": text}


def function_item(
    request_id: str, n: int, call_id: str, name: str, *, arguments: str, status: str
) -> dict[str, Any]:
    return {
        "type": "function_call",
        "id": f"fc_{request_id}_{n}",
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    }


def chat_to_response(raw: bytes, echo: Mapping[str, Any], request_id: str) -> bytes:
    """A whole chat completion as a Response object (JSON bytes)."""
    doc = json.loads(raw)
    text, refusal, calls, finish = completion_parts(doc)
    status = final_status(finish)
    output: list[dict[str, Any]] = []
    content = [text_part(text)] if text else []
    if refusal:
        content.append(refusal_part(refusal))
    if content:
        output.append(message_item(request_id, status, content))
    for n, call in enumerate(calls):
        output.append(
            function_item(
                request_id,
                n,
                call["id"],
                call["name"],
                arguments=call["arguments"],
                status="completed",
            )
        )
    created = doc.get("created")
    body = response_object(
        echo,
        request_id=request_id,
        model=str(doc.get("model") or ""),
        created_at=created if isinstance(created, int) else int(time.time()),
        status=status,
        output=output,
        usage=usage_object(*usage_counts(doc)),
        finish=finish,
    )
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
