"""Timezone-aware UTC timestamps, everywhere.

Every timestamp that enters matengine goes through :func:`to_utc` so naive values never leak
into SQL or comparisons. The wire format caveclient expects is produced by :func:`caveclient_format`.
"""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)


def to_utc(value: datetime | str | float | int) -> datetime:
    """Return ``value`` as an aware UTC datetime.

    Naive datetimes and ISO strings without a zone are taken to mean UTC (the field's
    convention); numbers are POSIX seconds.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, str, datetime)):
        # null, lists and objects from a JSON body: a TypeError callers turn into a 4xx
        raise TypeError(f"not a time: {value!r}")
    if isinstance(value, (int, float)):
        try:
            return datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError) as exc:  # 1e308 seconds, or nan
            raise ValueError(f"time out of range: {value!r}") from exc
    if isinstance(value, str):
        text = value.strip().replace("Z", "+00:00")
        value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def caveclient_format(value: datetime | None) -> str | None:
    """``%Y-%m-%dT%H:%M:%S.%f``, naive, meaning UTC: the only form caveclient parses."""
    if value is None:
        return None
    return to_utc(value).replace(tzinfo=None).strftime("%Y-%m-%dT%H:%M:%S.%f")
