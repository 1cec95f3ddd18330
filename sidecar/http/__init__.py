"""The sidecar's HTTP face: the aiohttp app, the SSE relay and the server.

Handlers parse and answer (:mod:`.app`); deciding and calling live in
:mod:`aegis.sidecar.exchange`. Every error leaves in OpenAI's error shape, mapped
in one place (:mod:`.openai_errors`), as JSON or as an SSE event of a stream
(:mod:`.relay`). The API listens on a loopback address only; metrics have their
own port (:mod:`.server`).
"""

from .app import build_app, build_metrics_app
from .openai_errors import error_body, error_event, error_response
from .server import RunningSidecar, run_forever, serve

__all__ = [
    "RunningSidecar",
    "build_app",
    "build_metrics_app",
    "error_body",
    "error_event",
    "error_response",
    "run_forever",
    "serve",
]
