"""Service days (SPEC §1): a tap belongs to the local date of ``ts - 4 h``, China Standard Time."""

from __future__ import annotations

import datetime as dt

import numpy as np

CST_OFFSET_MS = 8 * 3600 * 1000  # UTC+8, no daylight saving in any of the nine cities
DAY_START_MS = 4 * 3600 * 1000  # the operating day runs 04:00 to 03:59 local time
MINUTE_MS = 60_000
DAY_MS = 24 * 3600 * 1000
EPOCH = dt.date(1970, 1, 1)


def service_day_number(ts_ms: np.ndarray | int) -> np.ndarray | int:
    """Days since 1970-01-01 of the service day each ``ts_ms`` belongs to (floor division)."""
    return (
        (np.asarray(ts_ms, dtype=np.int64) + CST_OFFSET_MS - DAY_START_MS) // DAY_MS
        if isinstance(ts_ms, np.ndarray)
        else (int(ts_ms) + CST_OFFSET_MS - DAY_START_MS) // DAY_MS
    )


def day_number(day: dt.date) -> int:
    return (day - EPOCH).days


def day_from_number(n: int) -> dt.date:
    return EPOCH + dt.timedelta(days=int(n))


def service_day_of(ts_ms: int) -> dt.date:
    return day_from_number(int(service_day_number(int(ts_ms))))


def day_bounds_ms(day: dt.date) -> tuple[int, int]:
    """[start, end) in UTC ms of a service day: 04:00 local to 04:00 local the next day."""
    start = day_number(day) * DAY_MS - CST_OFFSET_MS + DAY_START_MS
    return start, start + DAY_MS


def local_ms(day: dt.date, hour: int, minute: int = 0, second: int = 0, ms: int = 0) -> int:
    """UTC ms of a local wall-clock time on the calendar date ``day`` (tests and generators)."""
    midnight = day_number(day) * DAY_MS - CST_OFFSET_MS
    return midnight + ((hour * 60 + minute) * 60 + second) * 1000 + ms
