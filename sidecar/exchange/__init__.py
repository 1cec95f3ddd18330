"""One request's effects: reserve, call, fall back, settle, record.

The router decides (pure); this package carries the decision out against the
runtime, in this order: take the request in under one config snapshot
(:mod:`.intake`), reserve the candidate's worst-case cost (:mod:`.charges`), call
the provider and on a retriable failure release and move to the next candidate
(:mod:`.attempts`), settle the real cost, append the ledger row and count the
metrics (:mod:`.record`), for a whole JSON answer or a stream (:mod:`.answers`).
The HTTP layer only parses and answers.
"""

from .answers import OpenStream, complete, open_stream
from .intake import begin
from .record import Exchange

__all__ = ["Exchange", "OpenStream", "begin", "complete", "open_stream"]
