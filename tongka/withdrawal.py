"""Withdrawing a batch (SPEC v1.2 §4), and settling its day again when it was settled."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine

from clearing.withdraw import Withdrawal, withdraw_batch
from tariffs.load import TariffSet
from tongka.settling import SettledDay, settle

WITHDRAWAL_REASON = "manual_correction"  # SPEC §8: an operator-approved correction of stored data


@dataclass(frozen=True, slots=True)
class Withdrawn:
    withdrawal: Withdrawal
    resettled: SettledDay | None  # the day's new settlement, when it had been settled


def withdraw(
    engine: Engine, home: Path, batch: int | str, tariffs: TariffSet, *, reason: str
) -> Withdrawn:
    """Withdraw the batch; a settled day is settled again at once, as an adjustment with its
    own payment run, so the ledger never shows taps that left the day."""
    w = withdraw_batch(engine, home, batch, reason=reason)
    resettled = settle(engine, home, w.service_day, tariffs, reason=WITHDRAWAL_REASON) if (
        w.was_settled) else None
    return Withdrawn(w, resettled)
