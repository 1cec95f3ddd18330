"""Budget periods: calendar months, named ``YYYY-MM``, in a budget's time zone.

Every ledger row stores the period it was charged to, so a new month is just a
new key: nothing ever has to "reset", and a request reserved on 31 October and
settled on 1 November stays in October because the row says so.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, tzinfo
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

PERIOD_RE = re.compile(r"^(?P<year>\d{4})-(?P<month>0[1-9]|1[0-2])$")


@lru_cache(maxsize=64)
def zone(name: str) -> tzinfo:
    """The ``tzinfo`` for an IANA name; ``ValueError`` for an unknown one."""
    if name in ("UTC", "Etc/UTC", "Z"):
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {name!r}") from exc


def period_of(now: datetime, tz: tzinfo = UTC) -> str:
    """The calendar month containing the instant ``now`` as seen in ``tz``."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("period_of needs a timezone-aware datetime")
    local = now.astimezone(tz)
    return f"{local.year:04d}-{local.month:02d}"


def check_period(period: str) -> str:
    """Return ``period`` if it is a ``YYYY-MM`` string, else raise ``ValueError``."""
    if not PERIOD_RE.match(period):
        raise ValueError(f"period must look like YYYY-MM, got {period!r}")
    return period


def shift_period(period: str, months: int) -> str:
    """``period`` moved by ``months`` calendar months (negative goes back)."""
    match = PERIOD_RE.match(period)
    if match is None:
        raise ValueError(f"period must look like YYYY-MM, got {period!r}")
    index = int(match["year"]) * 12 + int(match["month"]) - 1 + months
    return f"{index // 12:04d}-{index % 12 + 1:02d}"
