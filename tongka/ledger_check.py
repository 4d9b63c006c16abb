"""Verifying the ledger against a fresh recomputation from the stored legs."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine

from clearing.day import read_day_legs
from settlement.ledger import verify_ledger
from settlement.month_close import month_obligations
from settlement.settle import day_recomputer
from tariffs.load import TariffSet
from tongka.months import month_legs


def verify(engine: Engine, home: Path, tariffs: TariffSet) -> list[str]:
    """Every entry balances and the balances equal a recomputation of every settled day and
    closed month from the stored legs; the problems found (none: the ledger is right)."""
    return list(
        verify_ledger(
            engine,
            day_recomputer(lambda d: read_day_legs(home, d), tariffs),
            lambda m: month_obligations(month_legs(home, m), tariffs, m),
        )
    )
