"""Multilateral netting and hub-and-spoke payments through the centre's account (SPEC §8)."""

from __future__ import annotations

import datetime as dt
import enum
from collections import defaultdict
from collections.abc import Iterable
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
