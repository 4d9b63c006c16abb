"""Settling a service day (SPEC §7-§8): legs to obligations, netting, payments and one ledger entry.

The pure part (``compute_day``) turns a day's priced legs into its obligations, positions,
payments and summaries; ``settle_day`` adds the imperative shell: one settlement of the day
at a time, post only the difference from what the ledger already holds, record the run and
its payment instructions (the difference only, SPEC v1.2 §8), mark the day settled.
``settle_from_partials`` posts the same way from the partial sums of a partitioned clear
(``settlement.partials``), so a day of any size settles without its legs in one process.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from clearing.days import mark_settled
from settlement.apportion import allocate
from settlement.figures import CitySummary, DayFigures, city_summary, day_figures
from settlement.ledger import (
    EntryKind,
    Posted,
    Reason,
    Scope,
    ledger_transaction,
    parse_reason,
    post_run,
    target_balances,
)
from settlement.netting import Instruction, Payment
from settlement.obligations import DiscountLine, Obligation, day_obligations, discount_lines
from settlement.partials import DayPartials, partial_figures
from settlement.parties import Party
from tariffs.load import TariffSet


@dataclass(frozen=True)
class SettlementResult:
    """What settling a day computed and what it posted."""

    day: dt.date
    obligations: tuple[Obligation, ...]
    positions: dict[Party, int]  # net positions; they sum to 0
    # The whole day's hub-and-spoke payments, as if settled once: for statements and reports.
    # NOT what to send to the bank after a re-settlement: that is ``instructions``.
    payments: tuple[Payment, ...]
    entry_id: int | None  # None when nothing was posted (unchanged day, or a dry run)
    entry_kind: EntryKind | None
    reason: Reason
    posted: dict[str, int]  # account code -> amount this run posted (debit > 0)
    city_summary: tuple[CitySummary, ...]
    discounts: tuple[DiscountLine, ...] = field(default=())
    dry_run: bool = False
    settled: bool = False  # the day is recorded settled at the revision whose legs were settled
    allocated: np.ndarray | None = field(default=None, compare=False, repr=False)  # per leg
    run: int | None = None  # this settlement's run number for the day (None for a dry run)
    # The run's payment instructions: each party's change of net position in this run, with
    # ids DAY/RUN/N (SPEC v1.2 §8); the bank file is written from these (settlement.payments).
    instructions: tuple[Instruction, ...] = ()

    @property
    def entry_balance(self) -> int:
        """Sum of the postings this run made: 0 for every entry (SPEC §8)."""
        return sum(self.posted.values())

    @property
    def posted_debit_fen(self) -> int:
        return sum(v for v in self.posted.values() if v > 0)


@dataclass(frozen=True, slots=True)
class DayComputation:
    """The pure part of settling a day."""

    allocated: np.ndarray
    obligations: tuple[Obligation, ...]
    positions: dict[Party, int]
    payments: tuple[Payment, ...]
    city_summary: tuple[CitySummary, ...]
    discounts: tuple[DiscountLine, ...]


def compute_day(legs: pa.Table, tariffs: TariffSet, day: dt.date) -> DayComputation:
    """Apportion, build and net a day's obligations: no I/O, the same answer every time."""
    allocated = allocate(legs)
    discounts = tuple(discount_lines(legs, tariffs, day))  # once: obligations reuse them
    obligations = day_obligations(legs, allocated, tariffs, day, discounts=discounts)
    f = day_figures(obligations, city_summary(legs, allocated), discounts, day)
    return DayComputation(
        allocated=allocated,
        obligations=f.obligations,
        positions=f.positions,
        payments=f.payments,
        city_summary=f.city_summary,
        discounts=f.discounts,
    )


def settle_day(
    engine: Engine,
    day: dt.date,
    legs: pa.Table,
    tariffs: TariffSet,
    *,
    reason: str = "initial",
    dry_run: bool = False,
    revision: int | None = None,
    on_locked: Callable[[Session], None] | None = None,
) -> SettlementResult:
    """Settle one service day from its complete priced legs (SPEC §8).

    Posts the difference between the day's target balances and what is already posted for
    it: the first time a ``settlement`` entry, later an ``adjustment`` naming ``reason``
    (late_batch | tariff_correction | manual_correction); an unchanged day posts nothing.
    Every settlement that is not a dry run is a run of the day, recorded with its payment
    instructions in the entry's transaction: the first run pays the day's positions, later
    ones only their change, an unchanged day's run has no instruction.
    Raises StateError (SETTLEMENT_RUNNING) when another settlement of the day holds the lock,
    and (SETTLEMENT_REASON_REQUIRED) when a changed day is re-settled with reason "initial".
    ``dry_run`` computes everything and touches no database. ``revision`` is the day revision
    (``clearing.days.day_revision``) read before the legs were read: if a batch changed the day
    since, the difference is still posted but the day stays NEEDS_SETTLEMENT (``settled`` is
    False in the result) so the next settlement posts the rest. ``on_locked`` runs inside the
    locked transaction before posting (tests use it to hold the lock).
    """
    why = parse_reason(reason or "initial")
    comp = compute_day(legs, tariffs, day)
    figures = DayFigures(comp.obligations, comp.positions, comp.payments, comp.city_summary,
                         comp.discounts)
    return _post(engine, day, figures, comp.allocated, why, dry_run=dry_run, revision=revision,
                 on_locked=on_locked)


def settle_from_partials(
    engine: Engine,
    day: dt.date,
    partials: DayPartials,
    tariffs: TariffSet,
    *,
    reason: str = "initial",
    dry_run: bool = False,
    revision: int | None = None,
    on_locked: Callable[[Session], None] | None = None,
) -> SettlementResult:
    """Settle one service day from the summed partial sums of a partitioned clear.

    The same obligations, positions, payments, journal entry, run and instructions as
    ``settle_day`` on the day's legs (tests/test_scaleout_identity.py), and the same rules
    for ``reason``, ``dry_run``, ``revision`` and ``on_locked``; but no leg is read, so the
    work is O(parties), whatever the size of the day. The result has no per-leg
    ``allocated`` array (None). ``partials`` must be the whole day's, merged
    (``settlement.partials.merge_partials``; ``read_day_partials`` gives the stored ones).
    """
    why = parse_reason(reason or "initial")
    figures = partial_figures(partials, tariffs, day)
    return _post(engine, day, figures, None, why, dry_run=dry_run, revision=revision,
                 on_locked=on_locked)


def _post(
    engine: Engine,
    day: dt.date,
    figures: DayFigures,
    allocated: np.ndarray | None,
    why: Reason,
    *,
    dry_run: bool,
    revision: int | None,
    on_locked: Callable[[Session], None] | None,
) -> SettlementResult:
    """The imperative shell both ways of settling share: one locked transaction posts the
    difference as one balanced entry, records the run with its instructions and marks the
    day settled (see ``settle_day``)."""
    posted = Posted(None, None, why, {})
    settled = False
    run = None
    if not dry_run:
        target = target_balances(figures.obligations)
        with ledger_transaction(engine, Scope.DAY, day) as session:
            if on_locked is not None:
                on_locked(session)
            posted, run = post_run(session, day, Scope.DAY, target, why, value_date=day)
            settled = _mark_settled(session, day, revision)
    return SettlementResult(
        day=day,
        obligations=figures.obligations,
        positions=figures.positions,
        payments=figures.payments,
        entry_id=posted.entry_id,
        entry_kind=posted.kind,
        reason=why,
        posted=posted.postings,
        city_summary=figures.city_summary,
        discounts=figures.discounts,
        dry_run=dry_run,
        settled=settled,
        allocated=allocated,
        run=run.run if run is not None else None,
        instructions=run.instructions if run is not None else (),
    )


def _mark_settled(session: Session, day: dt.date, revision: int | None) -> bool:
    """Record the day settled in the same transaction as its entry (clearing.days), which is
    what makes a later batch for the day a late batch (SPEC §4)."""
    return mark_settled(session, day, revision=revision)


def day_recomputer(
    read_legs: Callable[[dt.date], pa.Table], tariffs: TariffSet
) -> Callable[[dt.date], list[Obligation]]:
    """``verify_ledger``'s ``recompute``: a day's obligations afresh from its stored legs."""

    def recompute(day: dt.date) -> list[Obligation]:
        return list(compute_day(read_legs(day), tariffs, day).obligations)

    return recompute
