"""The APIs clients speak, translated to and from the one internal request.

Chat completions and embeddings are the internal form; OpenAI's Responses API
(:mod:`.responses_request`, :mod:`.responses_answer`, :mod:`.responses_stream`)
and Anthropic's Messages API (:mod:`.messages_request`, :mod:`.messages_answer`)
are translated into it and their answers back, whole or streamed
(:mod:`.chunks` reads the upstream's stream), so routing, privacy, budgets,
rollout, the ledger and metrics are written once. :mod:`.translate` is the one
face the HTTP layer calls. Pure code: no I/O.
"""

from .kinds import Api, ErrorShape
from .translate import (
    ChatStream,
    StreamTranslator,
    Translated,
    answer,
    stream_translator,
    translate,
)

__all__ = [
    "Api",
    "ChatStream",
    "ErrorShape",
    "StreamTranslator",
    "Translated",
    "answer",
    "stream_translator",
    "translate",
]
