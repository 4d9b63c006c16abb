"""Multilateral netting and hub-and-spoke payments through the centre's account (SPEC §8)."""

from __future__ import annotations

import datetime as dt
import enum
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from settlement.obligations import Obligation
from settlement.parties import CENTRE, Party


class Direction(enum.IntEnum):
    """Which way a payment moves through the clearing centre's settlement account."""

    PAY_IN = 0  # the party pays its (negative) net position into the account
    PAY_OUT = 1  # the account pays the party its (positive) net position


@dataclass(frozen=True, slots=True, order=True)
class Payment:
    direction: Direction
    party: Party
    amount_fen: int  # > 0
    value_date: dt.date | None = None  # the settled day (or month close) the payment clears


def net_positions(obligations: Iterable[Obligation]) -> dict[Party, int]:
    """SPEC §8: what each party is owed minus what it owes; the positions sum to exactly 0.

    Every party named by an obligation appears, even when its position nets to 0, so a
    statement can say "you are square" rather than leave the party out.
    """
    positions: dict[Party, int] = defaultdict(int)
    for ob in obligations:
        positions[ob.creditor] += ob.amount_fen
        positions[ob.debtor] -= ob.amount_fen
    return dict(sorted(positions.items()))


def payment_instructions(
    positions: dict[Party, int], value_date: dt.date | None = None
) -> list[Payment]:
    """SPEC §8 hub and spoke: negatives pay in, positives other than the centre are paid out.

    The centre's own position (its fees) stays in the settlement account, so pay-ins minus
    pay-outs equal it.
    """
    payments = []
    for party, amount in sorted(positions.items()):
        if amount < 0:
            payments.append(Payment(Direction.PAY_IN, party, -amount, value_date))
        elif amount > 0 and party != CENTRE:
            payments.append(Payment(Direction.PAY_OUT, party, amount, value_date))
    return sorted(payments)


# ---------------------------------------------------------------- instructions per settlement run


@dataclass(frozen=True, slots=True)
class Instruction:
    """One payment instruction of one settlement run (SPEC v1.2 §8), as sent to the bank.

    Its id ``PERIOD/RUN/N`` is unique for ever, so a bank (or a finance team) can tell an
    instruction already paid from a new one; runs never reuse or rewrite instructions.
    """

    instruction_id: str  # e.g. "2026-11-24/2/1": period, run, number within the run
    n: int  # 1.. in ascending (role name, code) order of the party
    direction: Direction
    party: Party
    amount_fen: int  # > 0
    value_date: dt.date

    @property
    def signed_fen(self) -> int:
        """The instruction's effect on what the party has received: + paid out, - paid in."""
        return self.amount_fen if self.direction == Direction.PAY_OUT else -self.amount_fen


def position_changes(before: Mapping[Party, int], after: Mapping[Party, int]) -> dict[Party, int]:
    """How each party's net position moved between two settlements of a period (0s left out)."""
    parties = sorted(set(before) | set(after))
    moved = {p: after.get(p, 0) - before.get(p, 0) for p in parties}
    return {p: v for p, v in moved.items() if v != 0}


def instruction_order(party: Party) -> tuple[str, int]:
    """SPEC v1.2 §8: a run's instructions go in ascending (role, code), roles alphabetically."""
    return (party.role.name, party.code)


def instruction_id(period_label: str, run: int, n: int) -> str:
    """SPEC v1.2 §8: ``DAY/RUN/N`` (a month close uses ``YYYY-MM`` for the period)."""
    return f"{period_label}/{run}/{n}"


def run_instructions(
    changes: Mapping[Party, int], period_label: str, run: int, value_date: dt.date
) -> list[Instruction]:
    """One instruction per party whose net position changed in this run (SPEC v1.2 §8).

    A rise is paid out, a fall paid in. The clearing centre is never instructed: its change
    (fees) stays in the settlement account, so pay-ins minus pay-outs equal it, as for a day's
    first settlement (``payment_instructions``).
    """
    moved = sorted(
        ((p, v) for p, v in changes.items() if v != 0 and p != CENTRE),
        key=lambda pv: instruction_order(pv[0]),
    )
    return [
        Instruction(
            instruction_id=instruction_id(period_label, run, n),
            n=n,
            direction=Direction.PAY_OUT if amount > 0 else Direction.PAY_IN,
            party=party,
            amount_fen=abs(amount),
            value_date=value_date,
        )
        for n, (party, amount) in enumerate(moved, start=1)
    ]
