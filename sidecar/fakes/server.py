"""Running a fake upstream: in process (``async with FakeUpstream.start(...)``) or as
its own process (``python -m aegis.sidecar.fakes``).

Routes per kind:

* ``openai``: ``/v1/chat/completions``, ``/v1/embeddings``, ``/v1/models``;
  ``base_url`` = ``http://127.0.0.1:<port>/v1`` (what an OpenAI client takes).
* ``dashscope``: the same under ``/compatible-mode/v1``; ``base_url`` ends there.
* ``ollama``: ``/api/chat``, ``/api/embed``, ``/api/tags`` and the OpenAI face under
  ``/v1``; ``base_url`` = ``http://127.0.0.1:<port>`` (Ollama's own convention).
* ``anthropic``: ``/v1/messages`` and ``/v1/models`` (Anthropic's Messages API);
  ``base_url`` = ``http://127.0.0.1:<port>/v1`` (an Anthropic client takes
  :attr:`FakeUpstream.root_url`).

Every kind also serves ``GET /_fake/requests``, ``GET|POST /_fake/knobs``,
``GET /_fake/invoice`` (the calls it billed, :mod:`.invoice`) and ``POST /_fake/reset``.
"""

from __future__ import annotations

import json
from types import TracebackType
from typing import Any, Self

from aiohttp import web

from . import anthropic_api, ollama_api
from .common import STATE_KEY, state_of
from .errors import Flavour
from .knobs import KINDS, FakeKind, FakeState, Knobs
from .openai_api import chat_handler, embeddings_handler, models_handler

_PREFIX: dict[str, str] = {
    "openai": "/v1",
    "dashscope": "/compatible-mode/v1",
    "ollama": "",
    "anthropic": "/v1",
}


def _add_openai_face(app: web.Application, prefix: str, flavour: Flavour) -> None:
    app.router.add_post(f"{prefix}/chat/completions", chat_handler(flavour))
    app.router.add_post(f"{prefix}/embeddings", embeddings_handler(flavour))
    app.router.add_get(f"{prefix}/models", models_handler(flavour))


async def _get_requests(request: web.Request) -> web.Response:
    return web.json_response({"requests": list(state_of(request).requests)})


async def _get_knobs(request: web.Request) -> web.Response:
    return web.json_response({"knobs": state_of(request).knobs.to_json()})


async def _post_knobs(request: web.Request) -> web.Response:
    state = state_of(request)
    try:
        values = await request.json()
        if not isinstance(values, dict):
            raise ValueError("expected a JSON object of knob names and values")
        state.knobs.update(values)
    except (ValueError, json.JSONDecodeError) as exc:
        return web.json_response({"error": str(exc)}, status=400)
    return web.json_response({"knobs": state.knobs.to_json()})


async def _get_invoice(request: web.Request) -> web.Response:
    return web.json_response(state_of(request).invoice.to_json())


async def _post_reset(request: web.Request) -> web.Response:
    state_of(request).reset()
    return web.json_response({"ok": True})


def build_app(state: FakeState) -> web.Application:
    """The aiohttp application of one fake (usable with aiohttp's test utilities)."""
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[STATE_KEY] = state
    if state.kind == "ollama":
        app.router.add_post("/api/chat", ollama_api.chat)
        app.router.add_post("/api/embed", ollama_api.embed)
        app.router.add_get("/api/tags", ollama_api.tags)
        _add_openai_face(app, "/v1", "ollama_v1")
    elif state.kind == "anthropic":
        app.router.add_post("/v1/messages", anthropic_api.messages)
        app.router.add_get("/v1/models", anthropic_api.models)
    else:
        _add_openai_face(app, _PREFIX[state.kind], state.kind)
    app.router.add_get("/_fake/requests", _get_requests)
    app.router.add_get("/_fake/knobs", _get_knobs)
    app.router.add_post("/_fake/knobs", _post_knobs)
    app.router.add_get("/_fake/invoice", _get_invoice)
    app.router.add_post("/_fake/reset", _post_reset)
    return app


class FakeUpstream:
    """One fake provider on a loopback port.

    >>> async with FakeUpstream.start(kind="openai") as fake:   # doctest: +SKIP
    ...     client = openai.AsyncOpenAI(base_url=fake.base_url, api_key="sk-test")
    ...     fake.knobs.fail_next = 1
    ...     fake.requests[-1]["model"]
    """

    def __init__(
        self,
        kind: FakeKind = "openai",
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        knobs: Knobs | None = None,
    ) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown fake kind {kind!r}; expected one of {', '.join(KINDS)}")
        self.kind: FakeKind = kind
        self.host = host
        self._requested_port = port
        self.state = FakeState(kind, knobs)
        self._runner: web.AppRunner | None = None
        self.port = 0

    @classmethod
    def start(
        cls, kind: FakeKind = "openai", *, port: int = 0, host: str = "127.0.0.1", **knobs: Any
    ) -> FakeUpstream:
        """A fake to use as ``async with``; keyword arguments set knobs."""
        values = Knobs()
        values.update(knobs)
        return cls(kind, host=host, port=port, knobs=values)

    async def serve(self) -> None:
        # A caller hanging up cancels the handler, as on a real server: a stalled
        # answer must not outlive the connection it was for.
        runner = web.AppRunner(
            build_app(self.state),
            access_log=None,
            handle_signals=False,
            shutdown_timeout=0.5,
            handler_cancellation=True,
        )
        await runner.setup()
        site = web.TCPSite(runner, self.host, self._requested_port, reuse_address=True)
        await site.start()
        self._runner = runner
        address = runner.addresses[0]
        self.port = int(address[1])

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        await self.serve()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def root_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The provider base URL as a ``ProviderSpec.baseURL`` / OpenAI client takes it."""
        return self.root_url + _PREFIX[self.kind]

    @property
    def openai_base_url(self) -> str:
        """Where the OpenAI wire lives (Ollama: its ``/v1`` face)."""
        return self.root_url + (_PREFIX[self.kind] or "/v1")

    @property
    def knobs(self) -> Knobs:
        return self.state.knobs

    @property
    def requests(self) -> list[dict[str, Any]]:
        """What the fake received, oldest first (see ``common.record``)."""
        return list(self.state.requests)

    def set_knobs(self, **values: Any) -> None:
        self.state.knobs.update(values)

    def reset(self) -> None:
        """Default knobs and an empty request log."""
        self.state.reset()
