"""Payment instruction files: the hub-and-spoke payments of a settlement as a bank-upload CSV.

SPEC v1.2 §8: each settlement run has a file of its own, written from the run's instructions
as stored in the database (the truth; files are exports):

    <data dir>/payments/YYYY-MM-DD/run-001.csv   a service day's runs
    <data dir>/payments/YYYY-MM/run-001.csv      a month close's runs

A run file is created once, atomically and fsynced, and never rewritten or removed: writing it
again is a no-op when the bytes agree and a PaymentFileError when they do not, so an
instruction once handed to a bank can never be sent again under another file.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from clearing.errors import StateError
from clearing.files import create_once
from settlement.ledger import Run, Scope, load_runs, period_label
from settlement.netting import Direction, Instruction
from settlement.parties import CENTRE, Party, party_name
from tariffs.error_codes import ErrorCode
from tariffs.registry import Registry


class PaymentFileError(StateError):
    """A run's payment file exists with other content than the run's stored instructions."""

    code = ErrorCode.PAYMENT_FILE_CONFLICT

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


# ---------------------------------------------------------------- one file per settlement run

REFERENCES = {Scope.DAY: "TONGKA SETTLEMENT", Scope.MONTH: "TONGKA MONTH CLOSE"}


def run_path(home: Path, scope: Scope, period: dt.date, run: int) -> Path:
    """Where a run's file lives under the data directory (see the module docstring)."""
    return Path(home) / "payments" / period_label(scope, period) / f"run-{run:03d}.csv"


def render_run(run: Run, registry: Registry | None = None) -> bytes:
    """A run's file, byte for byte: the header, then its instructions in id order (a run that
    changed nothing is the header alone)."""
    buf = io.StringIO(newline="")
    writer = csv.writer(buf)
    writer.writerow(PAYMENT_FIELDS)
    for i in run.instructions:
        writer.writerow(_instruction_row(i, registry, REFERENCES[run.scope]))
    return buf.getvalue().encode("utf-8")


def _instruction_row(i: Instruction, registry: Registry | None, reference: str) -> list[object]:
    debit, credit = (
        (account_number(i.party), SETTLEMENT_ACCOUNT)
        if i.direction == Direction.PAY_IN
        else (SETTLEMENT_ACCOUNT, account_number(i.party))
    )
    return [
        i.instruction_id,
        i.value_date.isoformat(),
        i.direction.name.lower(),
        debit,
        credit,
        i.party.tag,
        party_name(i.party, registry),
        i.amount_fen,
        cny(i.amount_fen),
        "CNY",
        f"{reference} {i.instruction_id} {i.party.tag}",  # the id makes every reference unique
    ]


def write_run_file(home: Path, run: Run, registry: Registry | None = None) -> Path:
    """Write the run's file once; an existing one is never touched (SPEC v1.2 §8).

    Same bytes already there: nothing to do. Other bytes: PaymentFileError, since either the
    data directory belongs to another database or the file was edited by hand, and neither
    may be silently replaced.
    """
    path = run_path(home, run.scope, run.period, run.run)
    data = render_run(run, registry)
    if not path.exists():
        try:
            create_once(path, data)
            return path
        except FileExistsError:  # another writer made it between our look and our link
            pass
    if path.read_bytes() != data:
        raise PaymentFileError(
            f"payment file {path} exists with other content than run {run.run} of "
            f"{run.label} as stored; it is never rewritten: compare it with the database "
            "(a data directory of another database, or an edited file?)",
        )
    return path


def write_missing_run_files(
    engine: Engine,
    home: Path,
    registry: Registry | None = None,
    *,
    scope: Scope | None = None,
    period: dt.date | None = None,
) -> list[Path]:
    """Write the files of stored runs that have none (a crash between the commit and the
    file), optionally for one scope or period; existing files are left as they are. The paths
    written, in run order."""
    with Session(engine) as session:
        runs = load_runs(session, scope, period)
    written = []
    for run in runs:
        if not run_path(home, run.scope, run.period, run.run).exists():
            written.append(write_run_file(home, run, registry))
    return written


def read_payments_csv(path: Path) -> list[dict[str, str]]:
    """The rows of a payments file as written (for checks and tests)."""
    with open(path, encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))
