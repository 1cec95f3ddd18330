"""The body's depth bound is the same whichever parser read it: the walk over
containers only (orjson's bodies, which cannot hold a lone surrogate) refuses
exactly what the full walk refuses, at the same path."""

from __future__ import annotations

from typing import Any

import pytest

from aegis.sidecar.contract import LimitsSpec, decode
from aegis.sidecar.errors import BadRequest
from aegis.sidecar.frontends import Api
from aegis.sidecar.http.bounds import check_body

LIMITS = decode(LimitsSpec, {"maxJsonDepth": 8})


def nested(levels: int, as_list: bool) -> Any:
    value: Any = "x"
    for _ in range(levels):
        value = [value] if as_list else {"a": value}
    return value


@pytest.mark.parametrize("as_list", [False, True])
@pytest.mark.parametrize(("levels", "refused"), [(7, False), (8, True)])
def test_depth_is_bounded_alike_by_both_walks(as_list: bool, levels: int, refused: bool) -> None:
    body = {"model": "auto", "metadata": nested(levels, as_list)}  # the body is level 1
    answers: list[tuple[str | None, str] | None] = []
    for surrogates in (True, False):
        try:
            check_body(body, LIMITS, Api.CHAT, surrogates=surrogates)
            answers.append(None)
        except BadRequest as exc:
            answers.append((exc.param, str(exc)))
    assert answers[0] == answers[1]
    assert (answers[0] is not None) == refused
    if refused:
        assert answers[0] is not None and "8 levels" in answers[0][1]


def test_a_lone_surrogate_is_found_by_the_full_walk() -> None:
    body = {"model": "auto", "messages": [{"role": "user", "content": "a\ud800"}]}
    with pytest.raises(BadRequest, match="surrogate"):
        check_body(body, LIMITS, Api.CHAT)
