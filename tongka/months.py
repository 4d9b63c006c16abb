"""A calendar month's stored legs, and closing the month (rebates, their payment run)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
from sqlalchemy import Engine

from clearing.day import read_day_legs
from clearing.legs import LEG_SCHEMA
from clearing.legs_store import legs_path
from settlement.ledger import Scope
from settlement.month_close import MonthCloseResult, close_month, month_days, write_card_loads
from settlement.payments import write_missing_run_files
from tariffs.load import TariffSet


def month_legs(home: Path, month: dt.date) -> pa.Table:
    """The stored legs of every cleared day of a calendar month (days never cleared are empty)."""
    first, last = month_days(month)
    tables = []
    day = first
    while day <= last:
        if legs_path(home, day).exists():
            tables.append(read_day_legs(home, day))
        day += dt.timedelta(days=1)
    return pa.concat_tables(tables) if tables else LEG_SCHEMA.empty_table()


@dataclass(frozen=True, slots=True)
class ClosedMonth:
    """What closing a month did: the result, its payment files, the issuers' card-load files."""

    result: MonthCloseResult
    payment_files: tuple[Path, ...]
    card_load_dir: Path
    card_load_files: tuple[Path, ...]


def close(
    engine: Engine, home: Path, first: dt.date, tariffs: TariffSet, *, reason: str = "initial"
) -> ClosedMonth:
    """Close the month of ``first``: rebates posted (the difference on a re-close), the run's
    payment file (SPEC v1.2 §8), and each issuer's card-load file."""
    result = close_month(engine, first, month_legs(home, first), tariffs, reason=reason)
    files = write_missing_run_files(
        engine, home, tariffs.registry, scope=Scope.MONTH, period=first
    )
    out = home / "month-close" / f"{first:%Y-%m}"
    loads = write_card_loads(out, first, result.rebates)
    return ClosedMonth(result, tuple(files), out, tuple(loads))
