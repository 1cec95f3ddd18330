"""PII detection over text, and the effective data class of a request.

Detection only ever *raises* a request's data class (to ``privacy.detectedClass``
for the built-in detectors, to a custom pattern's own class for it), so a false
positive costs quality or money (the request stays local) while a false negative
leaks data. The detectors therefore favour recall where a format is distinctive
(checksums, separators) and demand context where it is not (a bare nine-digit
number is an SSN or a BSN only next to the word for it).

Text is normalised first (:mod:`.normalise`): look-alike characters folded,
invisible ones removed. The built-in detectors are :mod:`.pii_numbers` (one regex
pass finding digit clusters) and :mod:`.pii_email` (plain and in words); a route's
custom patterns run as one RE2 alternation (linear time whatever the pattern).
Findings carry a detector name and a span, never the matched text, so nothing
sensitive can leak into logs, metrics or the ledger from here.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from functools import lru_cache

import re2

from ..contract import CustomPattern, PrivacySpec
from ..values import valueclass
from .normalise import normalise
from .pii_email import find_emails
from .pii_numbers import PiiKind, scan_numbers

CUSTOM_PREFIX = "custom:"


@valueclass
class Finding:
    """One detected value: which detector, where (in the text it was found in)."""

    detector: str  # a PiiKind value, or "custom:<pattern name>"
    start: int
    end: int


class CustomPatterns:
    """A route's custom patterns compiled into one RE2 alternation."""

    __slots__ = ("_groups", "_names", "_regex")

    def __init__(self, patterns: Sequence[CustomPattern]) -> None:
        options = re2.Options()
        options.log_errors = False
        self._names = [CUSTOM_PREFIX + p.name for p in patterns]
        self._groups = [f"aegis{i}" for i in range(len(patterns))]
        alternation = "|".join(f"(?P<aegis{i}>{p.regex})" for i, p in enumerate(patterns))
        self._regex = re2.compile(alternation, options) if patterns else None

    def find(self, text: str) -> Iterator[Finding]:
        if self._regex is None:
            return
        for m in self._regex.finditer(text):
            if m.end() == m.start():
                continue
            for group, name in zip(self._groups, self._names, strict=True):
                if m.group(group) is not None:
                    yield Finding(name, m.start(), m.end())
                    break


@lru_cache(maxsize=64)
def _compiled(patterns: tuple[CustomPattern, ...]) -> CustomPatterns:
    return CustomPatterns(patterns)


def custom_patterns(privacy: PrivacySpec) -> CustomPatterns:
    """The compiled custom patterns of ``privacy`` (compiled once per config)."""
    return _compiled(tuple(privacy.patterns))


def find_in(text: str, custom: CustomPatterns | None = None) -> Iterator[Finding]:
    """Every finding in already normalised ``text``."""
    for start, end in find_emails(text):
        yield Finding(PiiKind.EMAIL.value, start, end)
    for kind, start, end in scan_numbers(text):
        yield Finding(kind.value, start, end)
    if custom is not None:
        yield from custom.find(text)


def detect(text: str) -> frozenset[PiiKind]:
    """The kinds of built-in PII present in ``text`` (never the matched text itself)."""
    return frozenset(PiiKind(f.detector) for f in find_in(normalise(text)))


def class_of(detector: str, privacy: PrivacySpec) -> str:
    """The class a detector's finding raises a request to."""
    if detector.startswith(CUSTOM_PREFIX):
        name = detector[len(CUSTOM_PREFIX) :]
        for pattern in privacy.patterns:
            if pattern.name == name:
                return pattern.data_class
    return privacy.detected_class


def raisable_classes(privacy: PrivacySpec) -> set[str]:
    """Every class detection can raise a request to."""
    return {privacy.detected_class, *(p.data_class for p in privacy.patterns)}


def stricter(a: str, b: str, privacy: PrivacySpec) -> str:
    return b if privacy.rank(b) > privacy.rank(a) else a


def effective_class(
    header_class: str | None, detected: frozenset[str] | set[str], privacy: PrivacySpec
) -> str:
    """The request's data class: the header's (or the default), raised by what
    was found (``detected``: detector names) and is not masked.

    Detection can only move a request *up* the ``privacy.classes`` order; a header
    that already names a stricter class keeps it.
    """
    result = header_class if header_class is not None else privacy.default_class
    for detector in detected:
        result = stricter(result, class_of(detector, privacy), privacy)
    return result


def detection_can_raise(header_class: str | None, privacy: PrivacySpec) -> bool:
    """Whether scanning could change the class at all (skip the scan when it cannot)."""
    if not privacy.detect:
        return False
    declared = header_class if header_class is not None else privacy.default_class
    rank = privacy.rank(declared)
    return any(privacy.rank(c) > rank for c in raisable_classes(privacy))
