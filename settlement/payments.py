"""Payment instruction files: the hub-and-spoke payments of a settlement as a bank-upload CSV."""

from __future__ import annotations

import csv
import datetime as dt
from collections.abc import Iterable
from pathlib import Path

from settlement.netting import Direction, Payment
from settlement.parties import CENTRE, Party, party_name
from tariffs.registry import Registry

PAYMENT_FIELDS = (
    "instruction_id",
    "value_date",
    "direction",
    "debit_account",
    "credit_account",
    "party",
    "party_name",
    "amount_fen",
    "amount_cny",
    "currency",
    "reference",
)


def cny(amount_fen: int) -> str:
    """Fen as a yuan string with two decimals, by integer arithmetic (never a float)."""
    sign = "-" if amount_fen < 0 else ""
    yuan, fen = divmod(abs(int(amount_fen)), 100)
    return f"{sign}{yuan}.{fen:02d}"


def account_number(party: Party) -> str:
    """The party's settlement bank account as the centre's files name it (a stable placeholder
    until the parties' real account numbers are part of the registry)."""
    return f"TONGKA-{party.tag}"


SETTLEMENT_ACCOUNT = account_number(CENTRE)  # the clearing centre's settlement account, the hub


def write_payments_csv(
    path: Path,
    payments: Iterable[Payment],
    day: dt.date | None = None,
    registry: Registry | None = None,
    *,
    reference: str = "TONGKA SETTLEMENT",
) -> Path:
    """Write one row per instruction: debit and credit account, the amount twice (integer fen
    for machines, yuan with two decimals for the bank) and a reference; replaced atomically,
    so a bank upload never reads half a file. ``day`` is the value date of payments that do
    not carry their own."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(PAYMENT_FIELDS)
        for n, p in enumerate(payments, start=1):
            value_date = p.value_date or day
            if value_date is None:
                raise ValueError("a payment has no value date: pass the settled day")
            debit, credit = (
                (account_number(p.party), SETTLEMENT_ACCOUNT)
                if p.direction == Direction.PAY_IN
                else (SETTLEMENT_ACCOUNT, account_number(p.party))
            )
            writer.writerow(
                [
                    f"{value_date:%Y%m%d}-{n:05d}",
                    value_date.isoformat(),
                    p.direction.name.lower(),
                    debit,
                    credit,
                    p.party.tag,
                    party_name(p.party, registry),
                    p.amount_fen,
                    cny(p.amount_fen),
                    "CNY",
                    f"{reference} {value_date.isoformat()} {p.party.tag}",
                ]
            )
    tmp.replace(path)
    return path


def read_payments_csv(path: Path) -> list[dict[str, str]]:
    """The rows of a payments file as written (for checks and tests)."""
    with open(path, encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))
