"""Settling a service day as finance runs it: the reason, re-clearing a changed day, the run's
payment file."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine

from clearing.day import clear_day, legs_revision, read_day_legs
from clearing.days import DayStatus, day_revision, day_status
from clearing.db import session_factory
from settlement.ledger import Scope, has_entries
from settlement.payments import write_missing_run_files
from settlement.settle import SettlementResult, settle_day
from tariffs.load import TariffSet


@dataclass(frozen=True, slots=True)
class SettledDay:
    """What settling a day did: the settlement, whether the day was cleared again first, and
    the payment files written (the run's own, and any lost to a crash after a commit)."""

    result: SettlementResult
    recleared: bool
    payment_files: tuple[Path, ...]


def default_reason(engine: Engine, day: dt.date) -> str:
    """SPEC §8: adjustments name their reason; a day settled before and changed since is
    settled again as a late batch, any other as the first settlement."""
    with session_factory(engine)() as session:
        changed = day_status(session, day) is DayStatus.NEEDS_SETTLEMENT
        settled_before = has_entries(session, day, Scope.DAY)
    return "late_batch" if settled_before and changed else "initial"


def settle(
    engine: Engine, home: Path, day: dt.date, tariffs: TariffSet, *, reason: str = "",
    clear_first: bool = False, progress: Callable[[str], None] | None = None,
) -> SettledDay:
    """Settle ``day`` from its complete legs: a day whose taps changed since it was cleared is
    cleared again first, so settlement never posts legs that miss taps (SPEC §4: never lost);
    then the run's payment instructions go to a file of their own (SPEC v1.2 §8).

    ``clear_first`` also clears a day never cleared (the service's one-call settlement; the
    command line keeps ``tongka clear`` a step of its own). ``progress`` hears each step.
    """
    say = progress or (lambda _text: None)
    reason = reason or default_reason(engine, day)
    with session_factory(engine)() as session:
        revision = day_revision(session, day)
    cleared = legs_revision(home, day)
    recleared = cleared is not None and cleared != revision
    if recleared or (clear_first and cleared is None):
        say("clearing: matching and pricing the day's taps")
        revision = clear_day(home, day, tariffs, engine=engine).revision
    say("settling: obligations, netting and the journal entry")
    legs = read_day_legs(home, day)
    result = settle_day(engine, day, legs, tariffs, reason=reason, revision=revision)
    say("writing the run's payment file")
    files = write_missing_run_files(engine, home, tariffs.registry, scope=Scope.DAY, period=day)
    return SettledDay(result, recleared, tuple(files))


def staleness(engine: Engine, home: Path, day: dt.date) -> str | None:
    """Why the stored legs of ``day`` no longer show the day (a report must say so), or None."""
    with session_factory(engine)() as session:
        revision = day_revision(session, day)
        status = day_status(session, day)
        settled_before = has_entries(session, day, Scope.DAY)
    cleared = legs_revision(home, day)
    if settled_before and status is DayStatus.NEEDS_SETTLEMENT:
        return (
            f"the taps of {day} changed since it was settled (a late or withdrawn batch): "
            f"these figures are not the settlement; run `tongka settle --date {day}` or "
            "report with --settle"
        )
    if cleared is not None and cleared != revision:
        return (
            f"the taps of {day} changed since it was cleared: these figures miss them; run "
            f"`tongka clear --date {day}` or report with --settle"
        )
    return None
