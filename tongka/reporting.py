"""The day's statements: per party CSV and HTML with charts, and the clearing-centre overview."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from sqlalchemy import Engine

from clearing.day import read_day_legs
from clearing.risk_store import read_day_signals
from settlement.settle import settle_day
from settlement.statements import write_statements
from tariffs.load import TariffSet


def write_report(
    engine: Engine, home: Path, day: dt.date, out: Path, tariffs: TariffSet,
    *, stale: str | None = None,
) -> list[Path]:
    """Statements of ``day`` from its stored legs as they stand (a dry-run settlement: nothing
    posted), with the day's risk signals; ``stale`` is the warning every page carries when the
    legs no longer show the day (``tongka.settling.staleness``)."""
    legs = read_day_legs(home, day)
    result = settle_day(engine, day, legs, tariffs, dry_run=True)
    signals = read_day_signals(home, day)
    return list(
        write_statements(out, day, legs, result, tariffs.registry, stale=stale, signals=signals)
    )
