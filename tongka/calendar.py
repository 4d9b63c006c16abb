"""The settlement calendar: for each service day of a range, what arrived, whether it is cleared
and settled, and whether it must be settled (again).

Finance reads it to know which days to settle (``GET /v1/days``, the finance pages). Every
figure comes from the stores that own it: the batches (``clearing.batches``), the day's revision
and status (``clearing.days``), the stored legs' revision (``clearing.day.legs_revision``) and
the settlement runs (``settlement.ledger``); nothing here decides anything the rooms decide.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine, case, func, select

from clearing.batches import Batch, BatchStatus
from clearing.days import DayStatus, ServiceDay
from clearing.db import session_factory
from clearing.errors import ErrorCode, InputError
from clearing.legs_store import legs_revision
from settlement.ledger import Scope, SettlementRun

# Service days Tongka handles: far beyond any real one, and every day's bounds (04:00 to 04:00
# China time, in epoch milliseconds) and its neighbours stay representable (as tongka.cli).
FIRST_DAY = dt.date(1970, 1, 2)
LAST_DAY = dt.date(2199, 12, 31)
MAX_DAYS = 366  # one calendar at a time: a year, so a page or a request stays small


class DayState(enum.StrEnum):
    """Where a service day stands, as finance acts on it."""

    EMPTY = "empty"  # nothing arrived and nothing was settled
    OPEN = "open"  # batches arrived, never settled: settle it
    SETTLED = "settled"  # settled at its current revision: nothing to do
    CHANGED = "changed"  # settled, then changed (a late or withdrawn batch): settle it again


@dataclass(frozen=True, slots=True)
class CalendarDay:
    """One service day of the calendar."""

    day: dt.date
    state: DayState
    batches: int  # batches stored for the day and not withdrawn
    late_batches: int  # of those, the ones that came after the day was settled (SPEC §4)
    taps: int  # taps those batches put in the tap store
    quarantined: int  # rows of those batches waiting in quarantine
    revision: int  # bumped by every change of the day's taps (0: never seen)
    cleared_revision: int | None  # the revision the stored legs were priced at; None: never
    settled_revision: int | None  # the revision last settled; None: never
    runs: int  # settlement runs of the day (SPEC v1.2 §8), including runs that changed nothing
    last_run_at: dt.datetime | None

    @property
    def needs_settlement(self) -> bool:
        return self.state in (DayState.OPEN, DayState.CHANGED)

    @property
    def cleared_current(self) -> bool:
        """The stored legs show the day's taps as they are now (a statement shows the day)."""
        return self.cleared_revision is not None and self.cleared_revision == self.revision


def checked_day(day: dt.date, what: str = "day") -> dt.date:
    """``day`` when Tongka handles it; InputError DATE_OUT_OF_RANGE otherwise."""
    if not FIRST_DAY <= day <= LAST_DAY:
        raise InputError(
            f"{what} {day.isoformat()} is outside the service days Tongka handles "
            f"({FIRST_DAY.isoformat()} to {LAST_DAY.isoformat()})",
            code=ErrorCode.DATE_OUT_OF_RANGE,
        )
    return day


def checked_range(first: dt.date, last: dt.date) -> tuple[dt.date, dt.date]:
    """A range of at most MAX_DAYS handled days, first to last; InputError otherwise."""
    checked_day(first, "first")
    checked_day(last, "last")
    if first > last:
        raise InputError(f"first {first} is after last {last}", code=ErrorCode.DAY_RANGE_INVALID)
    if (last - first).days >= MAX_DAYS:
        raise InputError(
            f"{first} to {last} is {(last - first).days + 1} days; ask for at most {MAX_DAYS}",
            code=ErrorCode.DAY_RANGE_INVALID,
        )
    return first, last


def service_days(engine: Engine, home: Path, *, first: dt.date, last: dt.date
                 ) -> list[CalendarDay]:
    """Every service day from ``first`` to ``last`` (inclusive), oldest first, days that saw
    nothing included (a calendar has no holes). Three grouped queries, however long the range.
    """
    first, last = checked_range(first, last)
    with session_factory(engine)() as s:
        live = Batch.status != BatchStatus.WITHDRAWN
        batches = {
            day: (int(n), int(late or 0), int(taps or 0), int(quarantined or 0))
            for day, n, late, taps, quarantined in s.execute(
                select(
                    Batch.service_day,
                    func.count(),
                    func.sum(case((Batch.late, 1), else_=0)),
                    func.sum(Batch.accepted),
                    func.sum(Batch.quarantined),
                )
                .where(Batch.service_day.between(first, last), live)
                .group_by(Batch.service_day)
            )
        }
        days = {
            row.day: (DayStatus(row.status), row.revision, row.settled_revision)
            for row in s.scalars(select(ServiceDay).where(ServiceDay.day.between(first, last)))
        }
        runs = {
            period: (int(n), at)
            for period, n, at in s.execute(
                select(SettlementRun.period, func.count(), func.max(SettlementRun.created_at))
                .where(
                    SettlementRun.scope == int(Scope.DAY),
                    SettlementRun.period.between(first, last),
                )
                .group_by(SettlementRun.period)
            )
        }
    out = []
    day = first
    while day <= last:
        n, late, taps, quarantined = batches.get(day, (0, 0, 0, 0))
        status, revision, settled_revision = days.get(day, (None, 0, None))
        run_count, last_run_at = runs.get(day, (0, None))
        out.append(CalendarDay(
            day=day,
            state=_state(status, settled_revision, run_count),
            batches=n,
            late_batches=late,
            taps=taps,
            quarantined=quarantined,
            revision=int(revision),
            cleared_revision=legs_revision(home, day),
            settled_revision=settled_revision,
            runs=run_count,
            last_run_at=last_run_at,
        ))
        day += dt.timedelta(days=1)
    return out


def _state(status: DayStatus | None, settled_revision: int | None, runs: int) -> DayState:
    if status is DayStatus.SETTLED:
        return DayState.SETTLED
    if status is DayStatus.NEEDS_SETTLEMENT:
        settled_before = settled_revision is not None or runs > 0
        return DayState.CHANGED if settled_before else DayState.OPEN
    return DayState.SETTLED if runs > 0 else DayState.EMPTY
