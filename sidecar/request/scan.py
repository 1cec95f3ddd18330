"""Privacy over a whole request body: what the provider would see, found and decided.

Every string of the body the client sent is read, whatever the API: values and
keys, at any depth (messages, content parts, ``user``, ``instructions``, tools and
their schemas, tool-call arguments and results, ``response_format``, ``metadata``,
Responses items, Anthropic system blocks), large integers, and the strings inside
a value that is itself JSON text (tool-call arguments). The normalised texts are
joined with newlines and scanned in one pass (no detector reads across a line
break). A value split over two neighbouring text fields ("4111 1111 " in one
content part, "1111 1111" in the next) is caught at the seam: where the end of one
and the start of the next hold a digit, an "@" or the word "at" or "dot", the two
ends are scanned together, glued and with a space between.

:func:`assess` turns the findings into the request's data class and, when the
route masks the classes found, into a :class:`~.masking.Masking` for cloud calls,
checked by scanning the masked body again: anything still found there keeps the
request local instead (masking fails closed).
"""

from __future__ import annotations

import json
import re
from bisect import bisect_right
from collections.abc import Iterator
from enum import StrEnum
from itertools import pairwise
from typing import Any

from ..contract import PrivacySpec
from ..errors import BadRequest
from ..values import valueclass
from .masking import Masking
from .normalise import normalise, origins
from .privacy import CustomPatterns, class_of, custom_patterns, detection_can_raise, find_in

# Values of these keys are protocol vocabulary, not text a value could be split into.
_STRUCTURAL = frozenset(
    {"type", "role", "id", "object", "status", "model", "tool_call_id", "call_id", "detail"}
)
_SEAM_CHARS = 64
_SEAM_WORDS = 24
_SEAM_WORD = re.compile(r"\b(?:at|dot)\b", re.IGNORECASE)
_MIN_SEAM_PIECE = 3
_JSON_TEXT = re.compile(r"\s*+[\[{].")
_JSON_START = ("[", "{")
_MIN_NUMBER = 100_000  # smaller integers are counts and limits, never an identifier


# One string of the body: its text, whether masking may replace parts of it (a
# string value, not a key or a number), and whether it is prose a value could be
# split across (not protocol vocabulary).
_Text = tuple[str, bool, bool]
_KEY = object()  # marks a dict key on the walk's stack


@valueclass
class Hit:
    """One finding in the body: its detector, the original characters it covers (one
    piece per string it spans) and whether masking may replace them."""

    detector: str
    pieces: tuple[str, ...]
    maskable: bool


def _texts(document: Any) -> list[_Text]:
    """Every string of a parsed JSON document in document order (iteratively: a
    deeply nested body must not exhaust the stack)."""
    out: list[_Text] = []
    stack: list[tuple[Any, Any]] = [(document, None)]
    while stack:
        value, key = stack.pop()
        if isinstance(value, str):
            if key is _KEY:
                out.append((value, False, False))
                continue
            out.append((value, True, key not in _STRUCTURAL))
            # The first character rules out most strings without the regex's call.
            first = value[:1]
            if (first in _JSON_START or first.isspace()) and _JSON_TEXT.match(value):
                try:
                    nested = json.loads(value)
                except ValueError:
                    continue
                except RecursionError:
                    # Unread, escaped values inside it could hide from detection: the
                    # request is refused rather than sent on unscanned.
                    raise _unreadable(document, value) from None
                stack.append((nested, "arguments"))
        elif isinstance(value, dict):
            for k, v in reversed(value.items()):
                stack.append((v, k))
                stack.append((k, _KEY))
        elif isinstance(value, list):
            stack.extend((v, key) for v in reversed(value))
        elif isinstance(value, int) and not isinstance(value, bool) and abs(value) >= _MIN_NUMBER:
            out.append((str(value), False, False))
    return out


def _unreadable(document: Any, text: str) -> BadRequest:
    """400 for a string holding JSON text nested deeper than the parser goes, naming
    the field that holds it (found again by a walk with paths: the error path only)."""
    stack: list[tuple[Any, str]] = [(document, "")]
    where = ""
    while stack and not where:
        value, path = stack.pop()
        if value is text:
            where = path
        elif isinstance(value, dict):
            stack += [(v, f"{path}.{k}" if path else str(k)) for k, v in value.items()]
        elif isinstance(value, list):
            stack += [(v, f"{path}[{i}]") for i, v in enumerate(value)]
    return BadRequest(
        f"Invalid '{where or 'body'}': the string holds JSON text nested too deeply for "
        "the privacy scan to read; send it flatter, or as text that is not JSON.",
        param=where or None,
        code="invalid_value",
    )


def _piece(original: str, folded: str, start: int, end: int) -> str:
    """The original characters behind ``folded[start:end]``."""
    if original is folded:
        return original[start:end]
    where = origins(original)
    return original[where[start] : where[end]]


def scan_document(document: Any, custom: CustomPatterns | None = None) -> Iterator[Hit]:
    """Every finding in ``document`` (see the module docstring)."""
    texts = _texts(document)
    folded = [normalise(t[0]) for t in texts]
    starts: list[int] = []
    position = 0
    for f in folded:
        starts.append(position)
        position += len(f) + 1
    joined = "\n".join(folded)
    for finding in find_in(joined, custom):
        first = bisect_right(starts, finding.start) - 1
        pieces: list[str] = []
        maskable = True
        i = first
        while i < len(texts) and starts[i] < finding.end:
            s = max(finding.start, starts[i]) - starts[i]
            e = min(finding.end, starts[i] + len(folded[i])) - starts[i]
            if e > s:
                pieces.append(_piece(texts[i][0], folded[i], s, e))
                maskable = maskable and texts[i][1]
            i += 1
        yield Hit(finding.detector, tuple(pieces), maskable)
    yield from _seams(texts, folded, custom)


def _seam_may_hide(tail: str, head: str) -> bool:
    """Whether a value may run across the end of ``tail`` into ``head``: digits on
    both sides, an "@" in the word at the seam, or the words "at" / "dot" near it."""
    if tail.rstrip(" -./")[-1:].isdigit() and head.lstrip(" -./(+")[:1].isdigit():
        return True
    last, first = tail.rsplit(None, 1), head.split(None, 1)
    if (last and "@" in last[-1]) or (first and "@" in first[0]):
        return True  # an address without spaces can only cross in its own word
    return (
        _SEAM_WORD.search(tail, len(tail) - _SEAM_WORDS) is not None
        or _SEAM_WORD.search(head, 0, _SEAM_WORDS) is not None
    )


def _seams(texts: list[_Text], folded: list[str], custom: CustomPatterns | None) -> Iterator[Hit]:
    prose = [i for i, t in enumerate(texts) if t[2] and folded[i]]
    for a, b in pairwise(prose):
        tail, head = folded[a][-_SEAM_CHARS:], folded[b][:_SEAM_CHARS]
        if not _seam_may_hide(tail, head):
            continue
        for glue in ("", " "):
            window = tail + glue + head
            cut = len(tail)
            for finding in find_in(window, custom):
                if finding.start >= cut or finding.end <= cut + len(glue):
                    continue  # on one side only: the main pass has it
                left_start = len(folded[a]) - cut + finding.start
                right_end = finding.end - cut - len(glue)
                pieces = (
                    _piece(texts[a][0], folded[a], left_start, len(folded[a])),
                    _piece(texts[b][0], folded[b], 0, right_end),
                )
                yield Hit(
                    finding.detector,
                    tuple(p for p in pieces if len(p) >= _MIN_SEAM_PIECE),
                    True,
                )


class PrivacyAction(StrEnum):
    """What privacy did to one request (a metric label and a ledger column)."""

    NONE = "none"
    DECLARED_LOCAL = "declared_local"  # its declared class keeps it on local providers
    KEPT_LOCAL = "kept_local"  # detection raised it to a local-only class
    MASKED = "masked"  # a cloud provider answered it with the detected values masked
    BLOCKED = "blocked"  # local-only, and no local provider was left: refused


def local_action(declared: str, data_class: str, privacy: PrivacySpec) -> PrivacyAction:
    """Whether (and why) a request's class keeps it on local providers."""
    if declared in privacy.local_only:
        return PrivacyAction.DECLARED_LOCAL
    if data_class in privacy.local_only:
        return PrivacyAction.KEPT_LOCAL
    return PrivacyAction.NONE


@valueclass
class Assessment:
    """The privacy decision for one request (detector names, never values)."""

    declared: str
    data_class: str
    detected: frozenset[str]
    masking: Masking | None = None  # for cloud calls; None when nothing is masked


def assess(body: Any, original: Any, header_class: str | None, privacy: PrivacySpec) -> Assessment:
    """Scan ``original`` (the client's body; ``body`` when it is the same), decide
    the class and, when the route masks what was found, check that the masked
    internal ``body`` shows none of it."""
    declared = header_class if header_class is not None else privacy.default_class
    if not detection_can_raise(header_class, privacy):
        return Assessment(declared, declared, frozenset())
    custom = custom_patterns(privacy)
    document = body if original is None else original
    rank = privacy.rank(declared)
    result = declared
    detected: set[str] = set()
    masked: list[tuple[str, str]] = []
    masked_classes: set[str] = set()
    for hit in scan_document(document, custom):
        detected.add(hit.detector)
        data_class = class_of(hit.detector, privacy)
        if privacy.rank(data_class) <= rank:
            continue
        if hit.maskable and data_class in privacy.mask and hit.pieces:
            masked.extend((hit.detector, piece) for piece in hit.pieces)
            masked_classes.add(data_class)
        elif privacy.rank(data_class) > privacy.rank(result):
            result = data_class
    if not masked or result in privacy.local_only:
        for data_class in masked_classes:
            if privacy.rank(data_class) > privacy.rank(result):
                result = data_class
        return Assessment(declared, result, frozenset(detected))
    masking = Masking(masked)
    leftover = any(
        class_of(hit.detector, privacy) in masked_classes
        for hit in scan_document(masking.apply(body), custom)
    )
    if leftover:
        for data_class in masked_classes:
            if privacy.rank(data_class) > privacy.rank(result):
                result = data_class
        return Assessment(declared, result, frozenset(detected))
    return Assessment(declared, result, frozenset(detected), masking)
