"""Month close (SPEC §6 monthly rebate, §8): rebates per card, netted on their own, posted once.

A card's spend on a network is the sum of the computed fares of its non-penalty legs there
over the month's service days; under the rebate rule in force on the month's last service day,
the highest tier reached earns its rebate (paid only to issuers the network's tariff version
accepts: ``tariffs.fares.monthly_rebate``), which the network's rebate operator owes the card's
issuer, and the issuer loads onto the card (the card-load file).
Re-closing a month posts only the difference, like re-settling a day.
"""

from __future__ import annotations

import calendar
import csv
import datetime as dt
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import Engine

from clearing import files
from clearing.days import days_needing_settlement
from clearing.errors import StateError
from clearing.legs import PENALTY_STATUSES
from clearing.service_day import day_number
from settlement.ledger import (
    EntryKind,
    Posted,
    Reason,
    Run,
    Scope,
    ledger_transaction,
    parse_reason,
    post_run,
    target_balances,
)
from settlement.netting import Instruction, Payment, net_positions, payment_instructions
from settlement.obligations import Obligation, ObligationKind
from settlement.parties import Party, issuer, operator
from settlement.payments import cny
from tariffs.error_codes import ErrorCode
from tariffs.fares import monthly_rebate
from tariffs.load import TariffSet
from tariffs.model import MonthlyRebate, TariffVersion
from tariffs.registry import FLAT


@dataclass(frozen=True, slots=True, order=True)
class Rebate:
    """One card's rebate on one network for one month."""

    issuer: int
    card_id: int  # the pseudonymous token (SPEC §3), never a card number
    network: int
    operator: int  # owes the rebate (the network's rebate rule)
    spend_fen: int
    rebate_fen: int


@dataclass(frozen=True)
class MonthCloseResult:
    month: dt.date  # the month's first day
    rebates: tuple[Rebate, ...]
    obligations: tuple[Obligation, ...]
    positions: dict[Party, int]
    payments: tuple[Payment, ...]
    entry_id: int | None
    entry_kind: EntryKind | None
    reason: Reason
    posted: dict[str, int]
    run: int | None = None  # this close's run of the month (None for a dry run)
    instructions: tuple[Instruction, ...] = ()  # the run's payment instructions: the change only

    @property
    def entry_balance(self) -> int:
        return sum(self.posted.values())


def parse_month(month: str | dt.date) -> dt.date:
    """``YYYY-MM`` (or any date in the month) to the month's first day."""
    if isinstance(month, dt.date):
        return month.replace(day=1)
    try:
        year, mon = (int(x) for x in month.split("-"))
        return dt.date(year, mon, 1)
    except ValueError:
        raise ValueError(f"not a month: {month!r} (expected YYYY-MM, e.g. 2026-11)") from None


def month_days(month: dt.date) -> tuple[dt.date, dt.date]:
    """First and last service day of the calendar month."""
    first = parse_month(month)
    return first, first.replace(day=calendar.monthrange(first.year, first.month)[1])


def rebate_rules(
    tariffs: TariffSet, month: dt.date
) -> dict[int, tuple[TariffVersion, MonthlyRebate]]:
    """By network, the rebate rule in force on the month's last service day and the tariff
    version holding it (SPEC §6, v1.2: month close runs after the month, under the rules the
    month ended with, for the whole month's spend; no rule in force then: no rebate)."""
    _, last = month_days(month)
    return tariffs.rebates_in_force(last)


def month_rebates(legs: pa.Table, tariffs: TariffSet, month: str | dt.date) -> list[Rebate]:
    """Every card's rebate of the month, from the month's legs (spend summed per network)."""
    first, last = month_days(parse_month(month))
    rules = rebate_rules(tariffs, first)
    if legs.num_rows == 0 or not rules:
        return []
    day = legs.column("service_day")
    keep = pc.and_(
        pc.and_(pc.greater_equal(day, day_number(first)), pc.less_equal(day, day_number(last))),
        pc.and_(
            pc.invert(
                pc.is_in(
                    legs.column("status"),
                    value_set=pa.array(
                        [int(s) for s in PENALTY_STATUSES], type=legs.schema.field("status").type
                    ),
                )
            ),
            pc.is_in(
                legs.column("network"),
                value_set=pa.array(sorted(rules), type=legs.schema.field("network").type),
            ),
        ),
    )
    month_legs = legs.filter(keep).select(["network", "issuer", "card_id", "computed_fen"])
    if month_legs.num_rows == 0:
        return []
    spend = month_legs.group_by(["network", "issuer", "card_id"]).aggregate(
        [("computed_fen", "sum")]
    )
    networks = spend.column("network").to_numpy()
    issuers = spend.column("issuer").to_numpy()
    cards = spend.column("card_id").to_numpy()
    spent = spend.column("computed_fen_sum").to_numpy()
    out: list[Rebate] = []
    for net, (version, rule) in sorted(rules.items()):
        if net == FLAT:
            continue
        rows = np.flatnonzero(networks == net)
        if rows.size == 0:
            continue
        # SPEC §6: the tiers and the accepted issuers are tariffs.fares.monthly_rebate's rule
        # alone; it is asked once per distinct (issuer, spend), not once per card.
        pairs, inverse = np.unique(
            np.stack([issuers[rows].astype(np.int64), spent[rows]]), axis=1, return_inverse=True
        )
        amounts = np.array(
            [monthly_rebate(version, rule, int(i), int(f)) for i, f in pairs.T], dtype=np.int64
        )[inverse.reshape(-1)]
        for i in np.flatnonzero(amounts):
            r = rows[i]
            out.append(
                Rebate(
                    int(issuers[r]), int(cards[r]), net, rule.operator, int(spent[r]),
                    int(amounts[i]),
                )
            )
    return sorted(out)


def rebate_obligations(rebates: Iterable[Rebate]) -> list[Obligation]:
    """SPEC §6: the rebate operator owes each card's issuer, summed per (operator, issuer)."""
    sums: dict[tuple[int, int], int] = defaultdict(int)
    for r in rebates:
        sums[(r.operator, r.issuer)] += r.rebate_fen
    return sorted(
        Obligation(operator(o), issuer(i), ObligationKind.REBATE, amount)
        for (o, i), amount in sums.items()
        if amount
    )


def month_obligations(legs: pa.Table, tariffs: TariffSet, month: str | dt.date) -> list[Obligation]:
    """The month's rebate obligations afresh (``verify_ledger``'s ``recompute_month``)."""
    return rebate_obligations(month_rebates(legs, tariffs, month))


def close_month(
    engine: Engine,
    month: str | dt.date,
    legs_of_month: pa.Table,
    tariffs: TariffSet,
    *,
    reason: str = "initial",
    dry_run: bool = False,
) -> MonthCloseResult:
    """Close a month: rebates, their obligations netted on their own, one month_close entry.

    Refuses (StateError MONTH_NOT_SETTLED) while a day of the month still needs settling
    (SPEC §8: month close runs after every day of the month is settled). Re-closing posts only
    the difference, and must name its reason when something changed.
    """
    first, last = month_days(parse_month(month))
    why = parse_reason(reason or "initial")
    rebates = tuple(month_rebates(legs_of_month, tariffs, first))
    obligations = tuple(rebate_obligations(rebates))
    positions = net_positions(obligations)
    posted = Posted(None, None, why, {})
    run: Run | None = None
    if not dry_run:
        _check_days_settled(engine, first, last)
        with ledger_transaction(engine, Scope.MONTH, first) as session:
            # SPEC v1.2 §8: each close is a run whose instructions are the change only
            posted, run = post_run(
                session, first, Scope.MONTH, target_balances(obligations), why, value_date=last
            )
    return MonthCloseResult(
        month=first,
        rebates=rebates,
        obligations=obligations,
        positions=positions,
        payments=tuple(payment_instructions(positions, last)),
        entry_id=posted.entry_id,
        entry_kind=posted.kind,
        reason=why,
        posted=posted.postings,
        run=run.run if run is not None else None,
        instructions=tuple(run.instructions) if run is not None else (),
    )


def _check_days_settled(engine: Engine, first: dt.date, last: dt.date) -> None:
    pending = [d for d in days_needing_settlement(engine) if first <= d <= last]
    if pending:
        shown = ", ".join(str(d) for d in pending[:5]) + (" ..." if len(pending) > 5 else "")
        raise StateError(
            f"month {first:%Y-%m} cannot close: {len(pending)} day(s) need settling first "
            f"({shown})",
            code=ErrorCode.MONTH_NOT_SETTLED,
        )


CARD_LOAD_FIELDS = (
    "month",
    "issuer",
    "card_id",
    "network",
    "operator",
    "spend_fen",
    "rebate_fen",
    "amount_cny",
)


def card_load_delta(previous: Iterable[Rebate], current: Iterable[Rebate]) -> list[Rebate]:
    """What issuers must load after a re-close: per card and network, the change of rebate
    (negative where a corrected month earns less), so no card is loaded twice."""
    before = {(r.issuer, r.card_id, r.network): r for r in previous}
    after = {(r.issuer, r.card_id, r.network): r for r in current}
    out = []
    for key in sorted(set(before) | set(after)):
        old, new = before.get(key), after.get(key)
        change = (new.rebate_fen if new else 0) - (old.rebate_fen if old else 0)
        if change:
            ref = new or old
            assert ref is not None
            out.append(
                Rebate(
                    ref.issuer,
                    ref.card_id,
                    ref.network,
                    ref.operator,
                    new.spend_fen if new else 0,
                    change,
                )
            )
    return out


def write_card_loads(
    out_dir: Path, month: dt.date, rebates: Iterable[Rebate], *, suffix: str = ""
) -> list[Path]:
    """One CSV per issuer: the card tokens and amounts it loads onto its cards (SPEC §6)."""
    by_issuer: dict[int, list[Rebate]] = defaultdict(list)
    for r in rebates:
        by_issuer[r.issuer].append(r)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for iss, rows in sorted(by_issuer.items()):
        path = out_dir / f"card-loads-{month:%Y-%m}-ISS-{iss}{suffix}.csv"
        with files.atomic_file(path, "w", encoding="utf-8", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(CARD_LOAD_FIELDS)
            for r in sorted(rows):
                writer.writerow(
                    [
                        f"{month:%Y-%m}",
                        r.issuer,
                        r.card_id,
                        r.network,
                        r.operator,
                        r.spend_fen,
                        r.rebate_fen,
                        cny(r.rebate_fen),
                    ]
                )
        paths.append(path)
    return paths


def read_card_loads(path: Path) -> list[Rebate]:
    with open(path, encoding="utf-8", newline="") as fh:
        return [
            Rebate(
                int(r["issuer"]),
                int(r["card_id"]),
                int(r["network"]),
                int(r["operator"]),
                int(r["spend_fen"]),
                int(r["rebate_fen"]),
            )
            for r in csv.DictReader(fh)
        ]
