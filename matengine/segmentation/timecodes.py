"""Exact microsecond time codes for graph timestamps.

Root graphs compare timestamps at microsecond resolution (the precision of PostgreSQL
``timestamptz`` and of Python datetimes). Comparing int64 microseconds instead of floats
keeps "an edit at t is in the state at T iff t <= T" exact, including at T == t and 1 µs
before it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from matengine.timeutil import to_utc

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)
# Sentinel "never expires" value; any real timestamp compares smaller.
NEVER = 2**63 - 1


def to_us(value: datetime | str | float | int) -> int:
    """Microseconds since the epoch of a timestamp (naive values mean UTC)."""
    return (to_utc(value) - EPOCH) // _ONE_US


def from_us(us: int) -> datetime:
    """Aware UTC datetime of a microsecond time code."""
    return EPOCH + timedelta(microseconds=int(us))


def seconds_to_us(seconds: float) -> int:
    """Float POSIX seconds (the PyChunkedGraph wire format) to microseconds.

    Rounding, not truncation: a float of ~1.7e9 s carries ~0.2 µs of error, so rounding
    recovers the exact microsecond the client meant.
    """
    return round(float(seconds) * 1_000_000)


def us_to_seconds(us: int) -> float:
    return int(us) / 1_000_000
