"""A chat-completions stream re-told as the Responses API's SSE events.

Order, as OpenAI sends it: ``response.created`` and ``response.in_progress``;
for each output item ``response.output_item.added``, then for a message
``response.content_part.added``, ``response.output_text.delta`` (or
``response.refusal.delta``) ..., ``response.output_text.done``,
``response.content_part.done``, and for a function call
``response.function_call_arguments.delta`` ..., ``...arguments.done``; then
``response.output_item.done``; finally one terminal event,
``response.completed`` (with usage), ``response.incomplete`` (cap reached) or
``response.failed``. Every event carries an increasing ``sequence_number``; there
is no ``[DONE]``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from .chunks import Delta, deltas
from .responses_answer import (
    final_status,
    function_item,
    message_item,
    refusal_part,
    response_object,
    text_part,
    usage_object,
)


class ResponsesStream:
    """Translates one stream; feed it the upstream's events in order."""

    def __init__(self, echo: Mapping[str, Any], request_id: str, model: str) -> None:
        self._echo = echo
        self._id = request_id
        self._model = model
        self._created = int(time.time())
        self._sequence = 0
        self._output: list[dict[str, Any]] = []
        self._open: dict[str, Any] | None = None  # the item being streamed
        self._part: dict[str, Any] | None = None  # its open content part (messages)
        self._calls: dict[int, dict[str, Any]] = {}  # chat tool-call index -> item
        self._finish: str | None = None

    # -- the translator's face -----------------------------------------------------------

    def start(self) -> bytes:
        snapshot = self._response("in_progress")
        return self._event("response.created", response=snapshot) + self._event(
            "response.in_progress", response=snapshot
        )

    def feed(self, events: bytes) -> bytes:
        out: list[bytes] = []
        for delta in deltas(events):
            self._apply(delta, out)
        return b"".join(out)

    def finish(self, usage: tuple[int, int] | None) -> bytes:
        out: list[bytes] = []
        status = final_status(self._finish)
        self._close(out, status)
        counts = usage_object(*usage) if usage is not None else None
        terminal = "response.incomplete" if status == "incomplete" else "response.completed"
        out.append(self._event(terminal, response=self._response(status, counts)))
        return b"".join(out)

    def failed(self, error: Mapping[str, Any]) -> bytes:
        out: list[bytes] = []
        self._close(out, "incomplete")
        out.append(self._event("response.failed", response=self._response("failed", error=error)))
        return b"".join(out)

    # -- internals --------------------------------------------------------------------------

    def _apply(self, delta: Delta, out: list[bytes]) -> None:
        if delta.kind == "finish":
            self._finish = delta.text
        elif delta.kind == "tool":
            item = self._calls.get(delta.index)
            if item is None:
                self._close(out, "completed")
                item = function_item(
                    self._id,
                    len(self._calls),
                    delta.call_id or f"call_{self._id}_{len(self._calls)}",
                    delta.name or "",
                    arguments="",
                    status="in_progress",
                )
                self._calls[delta.index] = item
                self._add(item, out)
            if delta.text:
                item["arguments"] += delta.text
                if item is self._open:
                    out.append(
                        self._item_event(
                            "response.function_call_arguments.delta", item, delta=delta.text
                        )
                    )
        else:
            part_type = "output_text" if delta.kind == "text" else "refusal"
            if self._open is None or self._open["type"] != "message":
                self._close(out, "completed")
                messages = sum(1 for item in self._output if item["type"] == "message")
                self._add(message_item(self._id, "in_progress", [], messages), out)
            if self._part is None or self._part["type"] != part_type:
                self._close_part(out)
                self._add_part(text_part("") if delta.kind == "text" else refusal_part(""), out)
            part = self._part
            assert part is not None
            if delta.kind == "text":
                part["text"] += delta.text
                out.append(
                    self._part_event("response.output_text.delta", delta=delta.text, logprobs=[])
                )
            else:
                part["refusal"] += delta.text
                out.append(self._part_event("response.refusal.delta", delta=delta.text))

    def _add(self, item: dict[str, Any], out: list[bytes]) -> None:
        self._output.append(item)
        self._open = item
        added = {**item, "content": []} if item["type"] == "message" else dict(item)
        out.append(
            self._event(
                "response.output_item.added", output_index=len(self._output) - 1, item=added
            )
        )

    def _add_part(self, part: dict[str, Any], out: list[bytes]) -> None:
        assert self._open is not None
        self._open["content"].append(part)
        self._part = part
        out.append(self._part_event("response.content_part.added", part=dict(part)))

    def _close_part(self, out: list[bytes]) -> None:
        part = self._part
        if part is None:
            return
        if part["type"] == "output_text":
            out.append(
                self._part_event("response.output_text.done", text=part["text"], logprobs=[])
            )
        else:
            out.append(self._part_event("response.refusal.done", refusal=part["refusal"]))
        out.append(self._part_event("response.content_part.done", part=dict(part)))
        self._part = None

    def _close(self, out: list[bytes], status: str) -> None:
        item = self._open
        if item is None:
            return
        if item["type"] == "message":
            self._close_part(out)
        else:
            out.append(
                self._item_event(
                    "response.function_call_arguments.done", item, arguments=item["arguments"]
                )
            )
        item["status"] = status
        out.append(
            self._event("response.output_item.done", output_index=self._index(item), item=item)
        )
        self._open = None

    def _response(
        self,
        status: str,
        usage: dict[str, Any] | None = None,
        error: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        done = status != "in_progress"
        return response_object(
            self._echo,
            request_id=self._id,
            model=self._model,
            created_at=self._created,
            status=status,
            output=list(self._output) if done else [],
            usage=usage,
            finish=self._finish,
            error=error,
        )

    def _item_event(self, kind: str, item: dict[str, Any], **fields: Any) -> bytes:
        return self._event(
            kind, item_id=item["id"], output_index=self._output.index(item), **fields
        )

    def _part_event(self, kind: str, **fields: Any) -> bytes:
        item, part = self._open, self._part
        assert item is not None and part is not None
        return self._event(
            kind,
            item_id=item["id"],
            output_index=self._index(item),
            content_index=next(i for i, p in enumerate(item["content"]) if p is part),
            **fields,
        )

    def _index(self, item: dict[str, Any]) -> int:
        return next(i for i, known in enumerate(self._output) if known is item)

    def _event(self, kind: str, **fields: Any) -> bytes:
        doc = {"type": kind, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        data = json.dumps(doc, ensure_ascii=False, separators=(",", ":"))
        return f"event: {kind}\ndata: {data}\n\n".encode()
