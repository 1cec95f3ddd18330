"""E-mail addresses, written plainly or in words, with their spans.

Plain: ``local@domain.tld``, found from each ``@`` (``str.find``, no regex over the
whole text). In words, the ways people write an address so that scrapers miss it:
``john dot doe at example dot com``, ``john.doe (at) example (dot) com``,
``john.doe[at]example[dot]com``, ``john.doe @ example.com``. Prose is full of "at"
("look at the dot com era", "meet at example.com"), so a bare word "at" counts
only with a spelled-out domain whose top-level domain is a common one, or with a
local part that looks like a mailbox (``john.doe``, ``jdoe42``), and never with an
English stop word as the first domain label.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

# Host part after '@': labels joined by dots (possessive: linear, no backtracking).
_DOMAIN = re.compile(r"[A-Za-z0-9-]++(?:\.[A-Za-z0-9-]++)++")
_LOCAL_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._%+-")
_LOCAL_MAX = 64

_OPEN, _CLOSE = r"[(\[{<]", r"[)\]}>]"
_DOT_WORDS = rf"(?:[ \t]*+{_OPEN}[ \t]?+dot[ \t]?+{_CLOSE}[ \t]*+|[ \t]++dot[ \t]++)"
_DOT = rf"(?:{_DOT_WORDS}|\.)"
# A marker written for "@" (in brackets, the bare word, or "@" with a space beside
# it) and the domain after it, in one pattern: every alternative starts with a
# rare character, and a marker without a domain fails inside the regex engine.
_AT_DOMAIN = re.compile(
    rf"(?:{_OPEN}[ \t]?+at[ \t]?+{_CLOSE}|(?<![A-Za-z0-9])at(?![A-Za-z0-9])"
    rf"|(?<=[ \t])@|@(?=[ \t]))"
    rf"[ \t]*+([A-Za-z0-9-]++(?:{_DOT}[A-Za-z0-9-]++)++)",
    re.IGNORECASE,
)
_SPACES = frozenset(" \t\n")
_OPENERS = frozenset("([{<")
_LOCAL_WORDS = re.compile(
    rf"([A-Za-z0-9_%+-]++(?:{_DOT}[A-Za-z0-9_%+-]++)*+)[ \t]*+\Z", re.IGNORECASE
)
_DOT_SPLIT = re.compile(_DOT, re.IGNORECASE)
_SPELLED_DOT = re.compile(_DOT_WORDS, re.IGNORECASE)
_MAILBOX_SIGNS = re.compile(r"[._%+0-9-]")
_TLDS = frozenset(
    re.findall(
        r"\w+",
        "com net org edu gov mil int info biz io co ai app dev me tv us uk de fr nl es it ch "
        "at be se no dk fi pl cz pt ie gr ru ua cn jp kr in au nz ca br mx ar za eu asia name "
        "pro xyz online site tech email mail cloud",
    )
)
_STOP_WORDS = frozenset(
    re.findall(
        r"\w+",
        "a an the this that these those my your our their his her its any all some no one "
        "least most first last once home work school night noon dawn times",
    )
)


def _plain(text: str) -> Iterator[tuple[int, int]]:
    at = text.find("@")
    while at != -1:
        if at > 0 and text[at - 1] in _LOCAL_CHARS:
            m = _DOMAIN.match(text, at + 1)
            if m is not None:
                tld = m.group().rsplit(".", 1)[1]
                if len(tld) >= 2 and tld.isalpha():
                    start = at - 1
                    while start > 0 and at - start < _LOCAL_MAX and text[start - 1] in _LOCAL_CHARS:
                        start -= 1
                    yield start, m.end()
        at = text.find("@", at + 1)


def _markers(text: str) -> Iterator[re.Match[str]]:
    """Each marker with a domain after it. Candidates come from ``str.find`` over the
    lower-cased text (every "at" and "@"); the full pattern then runs anchored at
    the few that stand as a word or in brackets."""
    lowered = text.lower()
    if len(lowered) != len(text):  # a few characters lower-case to two
        yield from _AT_DOMAIN.finditer(text)
        return
    starts: list[int] = []
    at = lowered.find("at")
    while at != -1:
        before = lowered[at - 1] if at else " "
        after = lowered[at + 2 : at + 3]
        if not (after.isalnum() and after.isascii()):
            if before in _SPACES:
                opener = lowered[at - 2] if at >= 2 else ""
                starts.append(at - 2 if opener in _OPENERS else at)
            elif before in _OPENERS:
                starts.append(at - 1)
        at = lowered.find("at", at + 2)
    at = lowered.find("@")
    while at != -1:
        starts.append(at)
        at = lowered.find("@", at + 1)
    if len(starts) > 1:
        starts.sort()
    for start in starts:
        m = _AT_DOMAIN.match(text, start)
        if m is not None:
            yield m


def _in_words(text: str) -> Iterator[tuple[int, int]]:
    for m in _markers(text):
        a, domain = m.start(), m.group(1)
        token = text[a : m.start(1)].strip(" \t").lower()
        labels = _DOT_SPLIT.split(domain)
        tld = labels[-1].lower()
        if not (2 <= len(tld) <= 24 and tld.isalpha()) or labels[0].lower() in _STOP_WORDS:
            continue
        local = _LOCAL_WORDS.search(text, max(0, a - 2 * _LOCAL_MAX), a)
        if local is None or local.end(1) == local.start(1):
            continue
        if token == "at":  # the bare word: only with more evidence
            spelled = _SPELLED_DOT.search(domain) is not None
            mailbox = _MAILBOX_SIGNS.search(local.group(1)) is not None
            if local.group(1).lower() in _STOP_WORDS:
                continue
            if not ((spelled and tld in _TLDS) or (mailbox and not spelled)):
                continue
        yield local.start(1), m.end(1)


def find_emails(text: str) -> Iterator[tuple[int, int]]:
    """Spans of the e-mail addresses in ``text`` (plain and in words)."""
    if "@" in text:
        yield from _plain(text)
    yield from _in_words(text)
