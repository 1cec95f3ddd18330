"""Budget periods: calendar days, ISO weeks and calendar months in a budget's time zone.

A period is named by its key, and the key says its kind:

- ``Daily``: ``YYYY-MM-DD`` (``2026-12-05``), from local midnight to the next;
- ``Weekly``: ``YYYY-Www`` (``2026-W49``), an ISO 8601 week, Monday 00:00 to the next
  Monday 00:00; the year is the ISO week-numbering year (``2026-12-31`` is in
  ``2026-W53``, ``2027-01-01`` too);
- ``Monthly``: ``YYYY-MM`` (``2026-12``), from the 1st 00:00 to the next 1st.

"Local" is the budget's IANA zone: a day across a daylight-saving change is 23 or 25
hours long. Every ledger row and every charge stores the key of its period, so a new
period is just a new key: nothing ever has to "reset", and a request reserved on
31 October and settled on 1 November stays in October because the row says so.

Within one kind, keys sort as their periods do (string order is time order).
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta, tzinfo
from enum import StrEnum
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = [
    "PERIOD_KEY_RE",
    "PERIOD_RE",
    "PeriodKind",
    "check_period",
    "check_period_key",
    "period_bounds",
    "period_kind",
    "period_of",
    "shift_period",
    "zone",
]


class PeriodKind(StrEnum):
    """How long a budget's period is (``spec.period``)."""

    DAILY = "Daily"
    WEEKLY = "Weekly"
    MONTHLY = "Monthly"


PERIOD_RE = re.compile(r"^(?P<year>\d{4})-(?P<month>0[1-9]|1[0-2])$")
_DAY_RE = re.compile(r"^(?P<year>\d{4})-(?P<month>0[1-9]|1[0-2])-(?P<day>0[1-9]|[12]\d|3[01])$")
_WEEK_RE = re.compile(r"^(?P<year>\d{4})-W(?P<week>0[1-9]|[1-4]\d|5[0-3])$")
#: Any period key (the longest is a day's, 10 characters).
PERIOD_KEY_RE = re.compile(
    r"^\d{4}-(?:(?:0[1-9]|1[0-2])(?:-(?:0[1-9]|[12]\d|3[01]))?|W(?:0[1-9]|[1-4]\d|5[0-3]))$"
)


@lru_cache(maxsize=64)
def zone(name: str) -> tzinfo:
    """The ``tzinfo`` for an IANA name; ``ValueError`` for an unknown one."""
    if name in ("UTC", "Etc/UTC", "Z"):
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {name!r}") from exc


def period_of(now: datetime, tz: tzinfo = UTC, kind: PeriodKind = PeriodKind.MONTHLY) -> str:
    """The key of the ``kind`` period containing the instant ``now`` as seen in ``tz``."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("period_of needs a timezone-aware datetime")
    local = now.astimezone(tz)
    if kind is PeriodKind.MONTHLY:
        return f"{local.year:04d}-{local.month:02d}"
    if kind is PeriodKind.DAILY:
        return f"{local.year:04d}-{local.month:02d}-{local.day:02d}"
    year, week, _ = local.date().isocalendar()
    return f"{year:04d}-W{week:02d}"


def period_kind(key: str) -> PeriodKind:
    """The kind a period key names; ``ValueError`` for anything else."""
    return _parse(key)[0]


def check_period(period: str) -> str:
    """Return ``period`` if it is a month key (``YYYY-MM``), else raise ``ValueError``."""
    if not PERIOD_RE.match(period):
        raise ValueError(f"period must look like YYYY-MM, got {period!r}")
    return period


def check_period_key(key: str) -> str:
    """Return ``key`` if it names a day, an ISO week or a month, else raise ``ValueError``."""
    _parse(key)
    return key


def period_bounds(key: str, tz: tzinfo = UTC) -> tuple[datetime, datetime]:
    """The instants the period ``key`` spans in ``tz``: ``[start, end)``, both in UTC.

    ``period_of(t, tz, period_kind(key)) == key`` exactly when ``start <= t < end``.
    The bounds are local midnights; where a daylight-saving gap skips midnight, the
    day starts at the first instant that exists.
    """
    kind, first = _parse(key)
    if kind is PeriodKind.DAILY:
        after = first + timedelta(days=1)
    elif kind is PeriodKind.WEEKLY:
        after = first + timedelta(days=7)
    else:
        after = date(first.year + first.month // 12, first.month % 12 + 1, 1)
    return _midnight(first, tz), _midnight(after, tz)


def shift_period(period: str, months: int) -> str:
    """The month key ``period`` moved by ``months`` calendar months (negative goes back)."""
    match = PERIOD_RE.match(period)
    if match is None:
        raise ValueError(f"period must look like YYYY-MM, got {period!r}")
    index = int(match["year"]) * 12 + int(match["month"]) - 1 + months
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


def _parse(key: str) -> tuple[PeriodKind, date]:
    """The kind of ``key`` and the first local day of its period."""
    try:
        if match := PERIOD_RE.match(key):
            return PeriodKind.MONTHLY, date(int(match["year"]), int(match["month"]), 1)
        if match := _WEEK_RE.match(key):
            year, week = int(match["year"]), int(match["week"])
            return PeriodKind.WEEKLY, date.fromisocalendar(year, week, 1)
        if match := _DAY_RE.match(key):
            year, month, day = int(match["year"]), int(match["month"]), int(match["day"])
            return PeriodKind.DAILY, date(year, month, day)
    except ValueError:
        pass  # 2026-02-30, or week 53 of a year that has 52
    raise ValueError(
        f"not a period key (YYYY-MM-DD, YYYY-Www or YYYY-MM) or no such period: {key!r}"
    )


def _midnight(day: date, tz: tzinfo) -> datetime:
    """The first instant of local ``day`` in ``tz``, in UTC.

    ``fold=0`` reads a wall time with the offset in force before a change: where a
    gap skips midnight that is the instant of the change (the day's first), and an
    ambiguous midnight is its first occurrence.
    """
    return datetime(day.year, day.month, day.day, tzinfo=tz).astimezone(UTC)
