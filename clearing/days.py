"""Service days in SQL: which days need settling, which are settled, and the lock on each day.

A day's row records whether it must be settled (again) and a ``revision`` that every change
to its accepted taps bumps; settlement records the revision it settled. ``lock_day`` is the
one place that serialises work on a day: ingestion holds it while it de-duplicates and
stores a batch, settlement should hold it while it reads and settles the day (SPEC §4: a
late batch is never lost and never counted twice; SPEC §8: one settlement of a day at a time).
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Iterable

from sqlalchemy import Date, DateTime, Engine, Integer, String, select, text
from sqlalchemy.orm import Mapped, Session, mapped_column

from clearing.db import Base, session_factory
from clearing.service_day import day_number

# PostgreSQL advisory locks are keyed (class, object): the class says "a tongka service day".
_LOCK_CLASS = 7_001


class DayStatus(enum.StrEnum):
    """Where a service day stands with settlement (stored as its value)."""

    NEEDS_SETTLEMENT = "needs_settlement"  # has accepted taps not yet settled (or never settled)
    SETTLED = "settled"  # settled at its current revision


class ServiceDay(Base):
    """One service day that has received batches or been settled."""

    __tablename__ = "service_days"

    day: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    status: Mapped[str] = mapped_column(String(24))
    revision: Mapped[int] = mapped_column(Integer, default=0)  # bumped by each change of taps
    settled_revision: Mapped[int | None] = mapped_column(Integer)  # revision last settled
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def lock_days(session: Session, days: Iterable[dt.date]) -> None:
    """Hold, until the transaction ends, the lock on each day (taken in date order: no deadlock).

    PostgreSQL: a transaction-scoped advisory lock per day, so different days proceed in
    parallel. SQLite has one writer at a time: a no-op write takes the database's write lock,
    which serialises every day at once (and makes the transaction's snapshot current).
    """
    ordered = sorted(set(days))
    if session.get_bind().dialect.name == "postgresql":
        for day in ordered:
            # keyed by the schema too: advisory locks are database-wide, and Tongka schemas
            # side by side in one database must not serialise each other's days
            session.execute(
                text("SELECT pg_advisory_xact_lock("
                     "hashtextextended(coalesce(current_schema(), '')"
                     " || ':' || :cls || ':' || :day, 0))"),
                {"cls": str(_LOCK_CLASS), "day": str(day_number(day))})
    elif ordered:
        session.execute(text("UPDATE service_days SET revision = revision WHERE 0 = 1"))


def lock_day(session: Session, day: dt.date) -> None:
    """Hold the lock on ``day`` until the transaction ends (see ``lock_days``)."""
    lock_days(session, [day])


def mark_needs_settlement(session: Session, day: dt.date) -> None:
    """Record that ``day``'s taps changed: it must be settled (again); bumps its revision."""
    lock_day(session, day)
    row = session.get(ServiceDay, day)
    if row is None:
        session.add(ServiceDay(day=day, status=DayStatus.NEEDS_SETTLEMENT.value, revision=1,
                               settled_revision=None, updated_at=_now()))
    else:
        row.status = DayStatus.NEEDS_SETTLEMENT.value
        row.revision += 1
        row.updated_at = _now()
    session.flush()


def mark_settled(session: Session, day: dt.date, *, revision: int | None = None) -> bool:
    """Record that ``day`` is settled; True if it now is.

    ``revision`` is the day revision the settlement read (``day_revision``); if a batch has
    changed the day since, the day stays NEEDS_SETTLEMENT and this returns False. Settlement
    that holds ``lock_day`` for its whole transaction cannot race a batch and may omit it.
    """
    lock_day(session, day)
    row = session.get(ServiceDay, day)
    if row is None:
        row = ServiceDay(day=day, status=DayStatus.SETTLED.value, revision=0,
                         settled_revision=0, updated_at=_now())
        session.add(row)
    if revision is not None and revision != row.revision:
        session.flush()
        return False
    row.status = DayStatus.SETTLED.value
    row.settled_revision = row.revision
    row.updated_at = _now()
    session.flush()
    return True


def day_revision(session: Session, day: dt.date) -> int:
    """The day's current revision (0 for a day never seen)."""
    rev = session.scalar(select(ServiceDay.revision).where(ServiceDay.day == day))
    return int(rev or 0)


def day_status(session: Session, day: dt.date) -> DayStatus | None:
    status = session.scalar(select(ServiceDay.status).where(ServiceDay.day == day))
    return None if status is None else DayStatus(status)


def is_settled(engine: Engine, day: dt.date) -> bool:
    """True when ``day`` is settled at its current revision."""
    with session_factory(engine)() as session:
        return day_status(session, day) is DayStatus.SETTLED


def days_needing_settlement(engine: Engine) -> list[dt.date]:
    """Days with accepted taps not yet settled, or changed since they were, oldest first."""
    with session_factory(engine)() as session:
        rows = session.scalars(
            select(ServiceDay.day)
            .where(ServiceDay.status == DayStatus.NEEDS_SETTLEMENT.value)
            .order_by(ServiceDay.day)
        )
        return list(rows)
