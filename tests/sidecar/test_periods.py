"""Budget periods: keys and exact boundaries across midnight, ISO week ends (week 53
and the year change) and month ends, in UTC, America/Los_Angeles (with its
daylight-saving days) and Asia/Kolkata (+05:30), with the instants written out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, tzinfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aegis.sidecar.contract.periods import (
    PERIOD_KEY_RE,
    PeriodKind,
    check_period,
    check_period_key,
    period_bounds,
    period_kind,
    period_of,
    shift_period,
    zone,
)

LA = zone("America/Los_Angeles")
KOLKATA = zone("Asia/Kolkata")
D, W, M = PeriodKind.DAILY, PeriodKind.WEEKLY, PeriodKind.MONTHLY
TICK = timedelta(microseconds=1)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("tz", "kind", "boundary", "before", "after"),
    [
        # Midnight.
        (UTC, D, "2026-12-06T00:00:00", "2026-12-05", "2026-12-06"),
        (LA, D, "2026-12-06T08:00:00", "2026-12-05", "2026-12-06"),  # PST, UTC-8
        (KOLKATA, D, "2026-12-05T18:30:00", "2026-12-05", "2026-12-06"),  # UTC+5:30
        # ISO week ends: Sunday 2026-12-27 -> Monday 2026-12-28 (W52 -> W53), and 2026's
        # week 53 ends on Sunday 2027-01-03: 1 January 2027 is still in 2026-W53.
        (UTC, W, "2026-12-28T00:00:00", "2026-W52", "2026-W53"),
        (UTC, W, "2027-01-04T00:00:00", "2026-W53", "2027-W01"),
        (LA, W, "2027-01-04T08:00:00", "2026-W53", "2027-W01"),
        (KOLKATA, W, "2027-01-03T18:30:00", "2026-W53", "2027-W01"),
        # A year with 52 weeks: 2025-12-29 is already 2026-W01.
        (UTC, W, "2025-12-29T00:00:00", "2025-W52", "2026-W01"),
        # Month ends, and the year's.
        (UTC, M, "2026-12-01T00:00:00", "2026-11", "2026-12"),
        (UTC, M, "2027-01-01T00:00:00", "2026-12", "2027-01"),
        (LA, M, "2027-01-01T08:00:00", "2026-12", "2027-01"),
        (KOLKATA, M, "2026-12-31T18:30:00", "2026-12", "2027-01"),
        (LA, M, "2026-03-01T08:00:00", "2026-02", "2026-03"),  # 28-day February
        (LA, M, "2028-03-01T08:00:00", "2028-02", "2028-03"),  # leap year
        # Daylight saving in Los Angeles: midnight after the spring change is 07:00 UTC
        # (PDT), after the autumn one 08:00 UTC again (PST); the week around it too.
        (LA, D, "2026-03-09T07:00:00", "2026-03-08", "2026-03-09"),
        (LA, D, "2026-11-02T08:00:00", "2026-11-01", "2026-11-02"),
        (LA, W, "2026-03-09T07:00:00", "2026-W10", "2026-W11"),
        (LA, M, "2026-04-01T07:00:00", "2026-03", "2026-04"),
    ],
)
def test_boundary(tz: tzinfo, kind: PeriodKind, boundary: str, before: str, after: str) -> None:
    instant = utc(boundary)
    assert period_of(instant - TICK, tz, kind) == before
    assert period_of(instant, tz, kind) == after
    assert period_bounds(before, tz)[1] == instant
    assert period_bounds(after, tz)[0] == instant


@pytest.mark.parametrize(
    ("key", "tz", "start", "hours"),
    [
        ("2026-03-08", LA, "2026-03-08T08:00:00", 23),  # spring forward: a 23-hour day
        ("2026-11-01", LA, "2026-11-01T07:00:00", 25),  # fall back: a 25-hour day
        ("2026-03-08", KOLKATA, "2026-03-07T18:30:00", 24),  # no DST in India
        ("2026-W10", LA, "2026-03-02T08:00:00", 7 * 24 - 1),
        ("2026-W45", LA, "2026-11-02T08:00:00", 7 * 24),
        ("2026-W53", UTC, "2026-12-28T00:00:00", 7 * 24),
        ("2026-03", LA, "2026-03-01T08:00:00", 31 * 24 - 1),
        ("2026-11", LA, "2026-11-01T07:00:00", 30 * 24 + 1),
        ("2026-02", KOLKATA, "2026-01-31T18:30:00", 28 * 24),
    ],
)
def test_bounds_span_local_days(key: str, tz: tzinfo, start: str, hours: int) -> None:
    first, end = period_bounds(key, tz)
    assert first == utc(start)
    assert first.tzinfo is UTC and end.tzinfo is UTC
    assert end - first == timedelta(hours=hours)


def test_dst_day_instants() -> None:
    """The local 02:00-03:00 that does not exist on 8 March, and the 01:00-02:00 that
    happens twice on 1 November, belong to their day."""
    assert period_of(utc("2026-03-08T09:59:59"), LA, D) == "2026-03-08"  # 01:59:59 PST
    assert period_of(utc("2026-03-08T10:00:00"), LA, D) == "2026-03-08"  # 03:00 PDT
    assert period_of(utc("2026-11-01T08:30:00"), LA, D) == "2026-11-01"  # 01:30 PDT
    assert period_of(utc("2026-11-01T09:30:00"), LA, D) == "2026-11-01"  # 01:30 PST
    assert period_of(utc("2026-11-02T07:59:59"), LA, D) == "2026-11-01"  # 23:59:59 PST


def test_gap_at_midnight_starts_the_day_at_the_change() -> None:
    """America/Havana skips 00:00-01:00 on 2026-03-08: the day begins at 01:00 CDT."""
    havana = zone("America/Havana")
    start, _ = period_bounds("2026-03-08", havana)
    assert start == utc("2026-03-08T05:00:00")  # 00:00 CST = 01:00 CDT
    assert period_of(start - TICK, havana, D) == "2026-03-07"
    assert period_of(start, havana, D) == "2026-03-08"


def test_keys_name_their_kind_and_are_checked() -> None:
    assert period_kind("2026-12-05") is D
    assert period_kind("2026-W49") is W
    assert period_kind("2026-12") is M
    assert check_period_key("2026-W53") == "2026-W53"
    for bad in ("2025-W53", "2026-02-30", "2026-13", "2026-W00", "2026-W54", "26-12", "x"):
        with pytest.raises(ValueError, match="not a period key"):
            period_kind(bad)
    assert check_period("2026-12") == "2026-12"
    with pytest.raises(ValueError, match="YYYY-MM"):
        check_period("2026-W49")
    assert shift_period("2026-01", -1) == "2025-12"
    with pytest.raises(ValueError, match="timezone-aware"):
        period_of(datetime(2026, 1, 1), UTC, D)


def test_default_is_monthly_in_utc() -> None:
    assert period_of(utc("2026-12-31T23:59:59")) == "2026-12"
    assert period_bounds("2026-12") == (utc("2026-12-01T00:00:00"), utc("2027-01-01T00:00:00"))


ZONES = st.sampled_from([UTC, LA, KOLKATA, zone("Australia/Lord_Howe"), zone("America/Havana")])
INSTANTS = st.datetimes(
    min_value=datetime(1990, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)


@given(INSTANTS, ZONES, st.sampled_from(list(PeriodKind)))
def test_an_instant_lies_in_its_period(instant: datetime, tz: tzinfo, kind: PeriodKind) -> None:
    key = period_of(instant, tz, kind)
    assert PERIOD_KEY_RE.match(key)
    assert period_kind(key) is kind
    start, end = period_bounds(key, tz)
    assert start <= instant < end
    assert period_of(start, tz, kind) == key
    assert period_of(end - TICK, tz, kind) == key
    assert period_of(end, tz, kind) > key
