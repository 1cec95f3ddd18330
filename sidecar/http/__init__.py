"""The sidecar's HTTP face: the aiohttp app, the SSE relay and the server.

Handlers parse and answer (:mod:`.app`) through the front ends
(:mod:`aegis.sidecar.frontends`); deciding and calling live in
:mod:`aegis.sidecar.exchange`. Every error leaves in the endpoint's own error
shape (OpenAI's or Anthropic's), mapped in one place (:mod:`.error_bodies`), as
JSON or as the API's event of a started stream (:mod:`.relay`). The API listens on
a loopback address only; metrics have their own port (:mod:`.server`).
"""

from .app import MODEL_ROUTES, build_app, build_metrics_app
from .error_bodies import anthropic_error_body, error_body, error_response, stream_error
from .server import RunningSidecar, run_forever, serve

__all__ = [
    "MODEL_ROUTES",
    "RunningSidecar",
    "anthropic_error_body",
    "build_app",
    "build_metrics_app",
    "error_body",
    "error_response",
    "run_forever",
    "serve",
    "stream_error",
]
