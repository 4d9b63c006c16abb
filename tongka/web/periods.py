"""Which month a page shows: the ``?month=YYYY-MM`` asked for, else the month of the latest
batch (a centre looks at the days it has), else the current service day's."""

from __future__ import annotations

import datetime as dt
import time

from sqlalchemy import Engine, func, select

from clearing.batches import Batch
from clearing.db import session_factory
from clearing.service_day import service_day_of
from settlement.month_close import month_days, parse_month
from tongka.calendar import FIRST_DAY, LAST_DAY
from tongka.web.guard import not_found


def month_of(engine: Engine, asked: str | None) -> dt.date:
    """The first day of the month to show; 404 for a month that is not one Tongka handles."""
    if asked:
        try:
            first = parse_month(asked)
        except (ValueError, OverflowError):
            raise not_found("month") from None
        if not FIRST_DAY.replace(day=1) <= first <= LAST_DAY:
            raise not_found("month")
        return first
    with session_factory(engine)() as s:
        latest = s.scalar(select(func.max(Batch.service_day)))
    return (latest or service_day_of(int(time.time() * 1000))).replace(day=1)


def bounds(first: dt.date) -> tuple[dt.date, dt.date]:
    """The month's first and last service day, kept inside the days Tongka handles."""
    start, end = month_days(first)
    return max(start, FIRST_DAY), min(end, LAST_DAY)


def neighbours(first: dt.date) -> tuple[str | None, str | None]:
    """``YYYY-MM`` of the month before and after, None at the ends of the handled range."""
    before = (first - dt.timedelta(days=1)).replace(day=1)
    after = (first + dt.timedelta(days=32)).replace(day=1)
    return (f"{before:%Y-%m}" if before >= FIRST_DAY.replace(day=1) else None,
            f"{after:%Y-%m}" if after <= LAST_DAY else None)
