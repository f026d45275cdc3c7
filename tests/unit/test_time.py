"""Time helpers: every timestamp is aware UTC, microsecond codes are exact, the time rule's
SQL is the rule, and a schedule is due exactly when a tick fell in (last start, now]."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from matengine.errors import InvalidInput
from matengine.query.sqlbuild import Binder, time_rule
from matengine.segmentation.timecodes import NEVER, from_us, seconds_to_us, to_us, us_to_seconds
from matengine.timeutil import caveclient_format, to_utc
from matengine.workflows.schedule import is_due, parse_schedule

T = datetime(2026, 3, 1, 12, 30, 15, 123456, tzinfo=UTC)


def test_naive_values_and_zoneless_strings_mean_utc():
    assert to_utc(datetime(2026, 3, 1, 12, 30, 15, 123456)) == T
    assert to_utc("2026-03-01T12:30:15.123456") == T
    assert to_utc("2026-03-01T12:30:15.123456Z") == T
    assert to_utc(" 2026-03-01T14:30:15.123456+02:00 ") == T


def test_aware_values_are_converted_to_utc():
    out = to_utc(datetime(2026, 3, 1, 7, 30, 15, 123456, tzinfo=timezone(timedelta(hours=-5))))
    assert out == T and out.tzinfo is UTC


def test_numbers_are_posix_seconds():
    assert to_utc(0) == datetime(1970, 1, 1, tzinfo=UTC)
    assert to_utc(1.5) == datetime(1970, 1, 1, 0, 0, 1, 500000, tzinfo=UTC)


def test_caveclient_format_is_naive_microseconds():
    assert caveclient_format(T) == "2026-03-01T12:30:15.123456"
    assert caveclient_format(None) is None


def test_microsecond_codes_round_trip_exactly():
    us = to_us(T)
    assert from_us(us) == T
    assert to_us(T - timedelta(microseconds=1)) == us - 1
    assert us < NEVER


def test_float_seconds_round_to_the_microsecond_meant():
    us = to_us(T)
    assert seconds_to_us(us_to_seconds(us)) == us


def test_time_rule_sql_binds_t_once_and_is_the_rule():
    b = Binder()
    sql = time_rule(b, T)
    assert sql == (
        "a.created <= CAST(%(p0)s AS timestamptz) AND "
        "(a.deleted IS NULL OR a.deleted > CAST(%(p0)s AS timestamptz))"
    )
    assert b.params == {"p0": T}


def test_schedule_due_exactly_when_a_tick_fell_since_the_last_start():
    now = datetime(2026, 3, 2, 3, 0, 30, tzinfo=UTC)
    assert is_due("0 3 * * *", datetime(2026, 3, 1, 3, 0, 5, tzinfo=UTC), now)
    assert not is_due("0 3 * * *", datetime(2026, 3, 2, 3, 0, 5, tzinfo=UTC), now)
    # never run: looks back one tick only
    assert is_due("0 3 * * *", None, now)
    assert not is_due("0 3 * * *", None, now + timedelta(minutes=5))


@pytest.mark.parametrize("expr", ["", "0 3 * *", "a b c d e", 7])
def test_a_bad_schedule_is_refused(expr):
    with pytest.raises(InvalidInput, match="schedule"):
        parse_schedule(expr)  # type: ignore[arg-type]
