"""The double-entry ledger (SPEC §8): accounts, journal entries and postings, never edited.

Conventions. Each party has one account per obligation kind its role can carry (the chart of
accounts below). An amount is a debit when positive and a credit when negative, as in any
double-entry book: an obligation "D owes C x of kind K" debits D's K account and credits C's,
so every entry sums to 0 fen and a party's net position is minus the sum of its balances.

A day's **target** balance per account follows from its obligations alone; settling posts the
difference between the target and what entries of that day already hold, so re-settling is
idempotent and a late batch posts exactly the change (SPEC §8). The database itself refuses
UPDATE and DELETE on posted rows (triggers created by migration 0002).

Every settlement of a period is a **run** (SPEC v1.2 §8), recorded in the same transaction as
its entry with the run's payment instructions: one per party for the change of its net position
that this run posted, so no instruction is ever issued twice. Migration 0003 makes PostgreSQL
refuse an unbalanced entry at commit; ``ledger_transaction`` checks the same before committing
on every database (SQLite has no deferred triggers).
"""

from __future__ import annotations

import datetime as dt
import enum
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import NamedTuple

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Date,
    DateTime,
    Engine,
    ForeignKey,
    Index,
    Integer,
    SmallInteger,
    String,
    UniqueConstraint,
    func,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Mapped, Session, mapped_column, relationship

from clearing.db import Base
from clearing.errors import StateError, TongkaError
from settlement.netting import Direction, Instruction, run_instructions
from settlement.obligations import Obligation, ObligationKind
from settlement.parties import Party
from tariffs.error_codes import ErrorCode
from tariffs.vocab import PartyRole


class EntryKind(enum.StrEnum):
    """Why a journal entry exists."""

    SETTLEMENT = "settlement"  # the first posting of a service day
    ADJUSTMENT = "adjustment"  # the difference of a day settled again
    MONTH_CLOSE = "month_close"  # a month's rebates, first close or the difference of a re-close


class Reason(enum.StrEnum):
    """What made the engine post: the first settlement, or why a day or month was settled again."""

    INITIAL = "initial"  # the first settlement of a day or month
    LATE_BATCH = "late_batch"  # a batch for an already settled day arrived (SPEC §4)
    TARIFF_CORRECTION = "tariff_correction"  # a corrected or new tariff version re-priced the day
    MANUAL_CORRECTION = "manual_correction"  # an operator-approved correction of stored data


class Scope(enum.IntEnum):
    """Which entries make up a settled period's posted balances."""

    DAY = 0  # settlement and adjustment entries of one service day
    MONTH = 1  # month_close entries of one calendar month (dated its first day)


SCOPE_KINDS: dict[Scope, tuple[EntryKind, ...]] = {
    Scope.DAY: (EntryKind.SETTLEMENT, EntryKind.ADJUSTMENT),
    Scope.MONTH: (EntryKind.MONTH_CLOSE,),
}

# The chart of accounts per party kind: which obligation kinds a party of each role can carry.
CHART: dict[PartyRole, tuple[ObligationKind, ...]] = {
    PartyRole.ISSUER: (ObligationKind.REVENUE, ObligationKind.REBATE),
    PartyRole.OPERATOR: (
        ObligationKind.REVENUE,
        ObligationKind.FEE,
        ObligationKind.SUBSIDY,
        ObligationKind.REBATE,
    ),
    PartyRole.GOVERNMENT: (ObligationKind.SUBSIDY,),
    PartyRole.CENTRE: (ObligationKind.FEE,),
}


class LedgerError(TongkaError):
    """The ledger's own contract is broken: an unbalanced entry, an account outside the chart."""

    code = ErrorCode.LEDGER_INVALID  # exit 1: a broken contract of the engine itself


class AccountKey(NamedTuple):
    """One account of the chart: a party's account for one obligation kind."""

    party: Party
    kind: ObligationKind

    @property
    def code(self) -> str:
        """Stable human code, e.g. ``OPR-101:REVENUE``."""
        return f"{self.party.tag}:{self.kind.name}"


def account_key(party: Party, kind: ObligationKind) -> AccountKey:
    if kind not in CHART[party.role]:
        raise LedgerError(
            f"a {party.role.name.lower()} has no {kind.name.lower()} account (chart of accounts)",
            code=ErrorCode.LEDGER_NOT_IN_CHART,
        )
    return AccountKey(party, kind)


# ---------------------------------------------------------------- tables (created by 0002)


ID = BigInteger().with_variant(Integer(), "sqlite")  # SQLite autoincrements INTEGER keys only


class Account(Base):
    __tablename__ = "accounts"
    __table_args__ = (UniqueConstraint("party_role", "party_code", "kind"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    code: Mapped[str] = mapped_column(String(40), unique=True)
    party_role: Mapped[int] = mapped_column(SmallInteger)
    party_code: Mapped[int] = mapped_column(Integer)
    kind: Mapped[int] = mapped_column(SmallInteger)  # ObligationKind

    @property
    def key(self) -> AccountKey:
        return AccountKey(
            Party(PartyRole(self.party_role), self.party_code), ObligationKind(self.kind)
        )


class JournalEntry(Base):
    __tablename__ = "journal_entries"
    __table_args__ = (
        CheckConstraint("kind IN ('settlement', 'adjustment', 'month_close')", name="kind"),
        CheckConstraint(
            "reason IN ('initial', 'late_batch', 'tariff_correction', 'manual_correction')",
            name="reason",
        ),
        Index("ix_journal_entries_day_kind", "day", "kind"),
    )

    id: Mapped[int] = mapped_column(ID, primary_key=True, autoincrement=True)
    day: Mapped[dt.date] = mapped_column(Date)  # service day; a month close: the month's first
    kind: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    postings: Mapped[list[Posting]] = relationship(back_populates="entry", order_by="Posting.id")


class Posting(Base):
    __tablename__ = "postings"
    __table_args__ = (
        UniqueConstraint("entry_id", "account_id"),
        CheckConstraint("amount_fen <> 0", name="nonzero"),
    )

    id: Mapped[int] = mapped_column(ID, primary_key=True, autoincrement=True)
    entry_id: Mapped[int] = mapped_column(ID, ForeignKey("journal_entries.id"), index=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    amount_fen: Mapped[int] = mapped_column(BigInteger)  # debit > 0, credit < 0
    entry: Mapped[JournalEntry] = relationship(back_populates="postings")
    account: Mapped[Account] = relationship()


class SettlementRun(Base):
    """One settlement of a period (SPEC v1.2 §8); created by migration 0003, never changed."""

    __tablename__ = "settlement_runs"
    __table_args__ = (
        UniqueConstraint("scope", "period", "run"),
        CheckConstraint("run >= 1", name="run_positive"),
    )

    id: Mapped[int] = mapped_column(ID, primary_key=True, autoincrement=True)
    scope: Mapped[int] = mapped_column(SmallInteger)  # Scope
    period: Mapped[dt.date] = mapped_column(Date)  # the service day, or the month's first day
    run: Mapped[int] = mapped_column(Integer)  # 1.. per (scope, period)
    entry_id: Mapped[int | None] = mapped_column(
        ID, ForeignKey("journal_entries.id"), nullable=True, unique=True
    )  # the run's journal entry (sealed by it: migration 0003); None when nothing changed
    reason: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class InstructionRow(Base):
    """One payment instruction of a run, stored before any file is written (the DB is the truth)."""

    __tablename__ = "payment_instructions"
    __table_args__ = (
        UniqueConstraint("run_id", "n"),
        CheckConstraint("amount_fen > 0", name="positive"),
        CheckConstraint("direction IN (0, 1)", name="direction"),
    )

    id: Mapped[int] = mapped_column(ID, primary_key=True, autoincrement=True)
    instruction_id: Mapped[str] = mapped_column(String(40), unique=True)
    run_id: Mapped[int] = mapped_column(ID, ForeignKey("settlement_runs.id"), index=True)
    n: Mapped[int] = mapped_column(Integer)
    value_date: Mapped[dt.date] = mapped_column(Date)
    party_role: Mapped[int] = mapped_column(SmallInteger)
    party_code: Mapped[int] = mapped_column(Integer)
    direction: Mapped[int] = mapped_column(SmallInteger)  # Direction
    amount_fen: Mapped[int] = mapped_column(BigInteger)  # > 0


# Insert-only tables: the engine's role may SELECT and INSERT them, nothing else (migration 0003,
# settlement.migrations.APPEND_ONLY_TABLES).
LEDGER_TABLES = (
    "accounts",
    "journal_entries",
    "postings",
    "settlement_runs",
    "payment_instructions",
)


# ---------------------------------------------------------------- pure arithmetic


def target_balances(obligations: Iterable[Obligation]) -> dict[AccountKey, int]:
    """The balances a period's obligations imply: the debtor's account debited, the creditor's
    credited, per kind. Zero balances are left out; the values sum to 0 by construction."""
    out: dict[AccountKey, int] = defaultdict(int)
    for ob in obligations:
        out[account_key(ob.debtor, ob.kind)] += ob.amount_fen
        out[account_key(ob.creditor, ob.kind)] -= ob.amount_fen
    return {k: v for k, v in sorted(out.items()) if v != 0}


def difference(
    target: Mapping[AccountKey, int], posted: Mapping[AccountKey, int]
) -> dict[AccountKey, int]:
    """What must be posted so that ``posted`` becomes ``target`` (SPEC §8: only the difference)."""
    keys = sorted(set(target) | set(posted))
    diff = {k: target.get(k, 0) - posted.get(k, 0) for k in keys}
    return {k: v for k, v in diff.items() if v != 0}


def positions_from_balances(balances: Mapping[AccountKey, int]) -> dict[Party, int]:
    """Net positions (owed minus owes) from account balances: minus each party's debits.

    Parties that net to 0 are left out: accounts an adjustment brought back to 0 still exist."""
    out: dict[Party, int] = defaultdict(int)
    for key, amount in balances.items():
        out[key.party] -= amount
    return {p: v for p, v in sorted(out.items()) if v != 0}


# ---------------------------------------------------------------- locking


LOCK_NAMESPACE = {Scope.DAY: 0x544B_0000_0000, Scope.MONTH: 0x544B_1000_0000}  # "TK"
SQLITE_LOCK_WAIT_MS = 2_000  # how long a settler waits for another writer before giving up
SQLITE_BUSY_MS = 60_000  # clearing.db's connection default, restored afterwards


@contextmanager
def ledger_transaction(engine: Engine, scope: Scope, day: dt.date) -> Iterator[Session]:
    """One settlement's unit of work, holding the lock that lets one settlement of ``day`` run.

    PostgreSQL: a transaction-scoped advisory lock keyed by the scope and the day; a second
    settler of the same day fails at once. SQLite has one writer per database: the transaction
    is BEGIN IMMEDIATE, and a second settler that cannot get the write lock within
    ``SQLITE_LOCK_WAIT_MS`` fails. Either failure is a StateError with code SETTLEMENT_RUNNING.
    """
    what = f"month {day:%Y-%m}" if scope == Scope.MONTH else f"day {day}"
    with Session(engine, expire_on_commit=False) as session, session.begin():
        conn = session.connection()
        if conn.dialect.name == "postgresql":
            key = LOCK_NAMESPACE[scope] + (day.toordinal())
            # keyed by the schema too: advisory locks are database-wide, and two Tongka
            # schemas in one database (deployments, parallel tests) must not block each other
            got = conn.execute(
                text("SELECT pg_try_advisory_xact_lock("
                     "hashtextextended(coalesce(current_schema(), '') || ':ledger:' || :k, 0))"),
                {"k": str(key)},
            ).scalar()
            if not got:
                raise StateError(
                    f"a settlement of {what} is running; wait for it to finish and run again",
                    code=ErrorCode.SETTLEMENT_RUNNING,
                )
        elif conn.dialect.name == "sqlite":
            # clearing.db starts every transaction with a plain (deferred) BEGIN, which takes no
            # lock; end that empty transaction and take the write lock up front instead.
            conn.exec_driver_sql("COMMIT")
            conn.exec_driver_sql(f"PRAGMA busy_timeout = {SQLITE_LOCK_WAIT_MS}")
            try:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            except OperationalError as exc:
                if "locked" not in str(exc).lower() and "busy" not in str(exc).lower():
                    raise
                raise StateError(
                    f"a settlement of {what} is running (or another write holds this SQLite "
                    "database); wait for it to finish and run again",
                    code=ErrorCode.SETTLEMENT_RUNNING,
                ) from None
            finally:
                conn.exec_driver_sql(f"PRAGMA busy_timeout = {SQLITE_BUSY_MS}")
        mark = _last_posting_id(session)
        yield session
        check_new_entries_balance(session, mark)


def _last_posting_id(session: Session) -> int:
    return int(session.execute(select(func.coalesce(func.max(Posting.id), 0))).scalar_one())


def check_new_entries_balance(session: Session, after_posting_id: int) -> None:
    """SPEC v1.2 §8 at commit: every entry that got a posting in this transaction sums to 0.

    The last check before a settlement commits, whatever wrote the postings; PostgreSQL checks
    the same again in a deferred constraint trigger (migration 0003), SQLite has only this.
    """
    session.flush()
    touched = select(Posting.entry_id).where(Posting.id > after_posting_id).distinct()
    bad = session.execute(
        select(Posting.entry_id, func.sum(Posting.amount_fen))
        .where(Posting.entry_id.in_(touched))
        .group_by(Posting.entry_id)
        .having(func.sum(Posting.amount_fen) != 0)
        .order_by(Posting.entry_id)
    ).all()
    if bad:
        shown = ", ".join(f"entry {e} sums to {int(t):+d} fen" for e, t in bad)
        raise LedgerError(
            f"refusing to commit unbalanced journal entries: {shown}",
            code=ErrorCode.LEDGER_UNBALANCED,
        )


# ---------------------------------------------------------------- reading and posting


def posted_balances(session: Session, day: dt.date, scope: Scope) -> dict[AccountKey, int]:
    """What entries of one period (a service day, or a month dated its first day) hold."""
    rows = session.execute(
        select(Account.party_role, Account.party_code, Account.kind, func.sum(Posting.amount_fen))
        .join(Posting, Posting.account_id == Account.id)
        .join(JournalEntry, JournalEntry.id == Posting.entry_id)
        .where(
            JournalEntry.day == day, JournalEntry.kind.in_([k.value for k in SCOPE_KINDS[scope]])
        )
        .group_by(Account.party_role, Account.party_code, Account.kind)
    ).all()
    out = {
        AccountKey(Party(PartyRole(r), c), ObligationKind(k)): int(total) for r, c, k, total in rows
    }
    return {k: v for k, v in sorted(out.items()) if v != 0}


def has_entries(session: Session, day: dt.date, scope: Scope) -> bool:
    kinds = [k.value for k in SCOPE_KINDS[scope]]
    return (
        session.execute(
            select(JournalEntry.id)
            .where(JournalEntry.day == day, JournalEntry.kind.in_(kinds))
            .limit(1)
        ).first()
        is not None
    )


@dataclass(frozen=True, slots=True)
class Posted:
    """What one settlement run wrote: the entry (None when nothing changed) and its postings."""

    entry_id: int | None
    kind: EntryKind | None
    reason: Reason
    postings: dict[str, int]  # account code -> amount (debit > 0)
    changes: dict[Party, int] = field(default_factory=dict)  # net position moves this posted

    @property
    def debit_fen(self) -> int:
        return sum(v for v in self.postings.values() if v > 0)


def post_difference(
    session: Session,
    day: dt.date,
    scope: Scope,
    target: Mapping[AccountKey, int],
    reason: Reason,
    *,
    now: dt.datetime | None = None,
) -> Posted:
    """Post ``target - posted`` for the period as one balanced entry; post nothing if it is 0.

    The first entry of a day is a settlement; later ones are adjustments and must name why
    (a StateError asks for the reason rather than guess it). Month entries are month_close.
    """
    posted = posted_balances(session, day, scope)
    diff = difference(target, posted)
    if not diff:
        return Posted(None, None, reason, {})
    check_balanced(diff.values(), f"the {scope.name.lower()} entry of {day}")
    if scope == Scope.MONTH:
        kind = EntryKind.MONTH_CLOSE
        again = has_entries(session, day, scope)
    else:
        again = has_entries(session, day, scope)
        kind = EntryKind.ADJUSTMENT if again else EntryKind.SETTLEMENT
    if again and reason == Reason.INITIAL:
        raise StateError(
            f"{'month ' + format(day, '%Y-%m') if scope == Scope.MONTH else 'day ' + str(day)} "
            "is already settled and its obligations changed; settle it again with a reason "
            "(late_batch, tariff_correction or manual_correction)",
            code=ErrorCode.SETTLEMENT_REASON_REQUIRED,
        )
    entry_id = post_entry(session, day, kind, reason, diff, now=now)
    return Posted(
        entry_id, kind, reason, {k.code: v for k, v in diff.items()}, positions_from_balances(diff)
    )


def post_entry(
    session: Session,
    day: dt.date,
    kind: EntryKind,
    reason: Reason,
    amounts: Mapping[AccountKey, int],
    *,
    now: dt.datetime | None = None,
) -> int:
    """Insert one journal entry and its postings; the entry's id.

    It does not check the balance itself: the commit does (``ledger_transaction``, and on
    PostgreSQL the deferred trigger), so no path that writes postings can skip the check.
    """
    accounts = ensure_accounts(session, amounts.keys())
    entry = JournalEntry(
        day=day, kind=kind.value, reason=reason.value, created_at=now or dt.datetime.now(dt.UTC)
    )
    session.add(entry)
    session.flush()
    session.add_all(
        Posting(entry_id=entry.id, account_id=accounts[key], amount_fen=amount)
        for key, amount in amounts.items()
    )
    session.flush()
    return entry.id


# ---------------------------------------------------------------- settlement runs


@dataclass(frozen=True, slots=True)
class Run:
    """One settlement of a period and the instructions it issued (the change, not the period)."""

    scope: Scope
    period: dt.date  # the service day, or the month's first day
    run: int  # 1.. counting the period's settlements
    entry_id: int | None  # None when the run changed nothing
    reason: Reason
    instructions: tuple[Instruction, ...]

    @property
    def label(self) -> str:
        return period_label(self.scope, self.period)


def period_label(scope: Scope, period: dt.date) -> str:
    """The period part of instruction ids and file names: ``2026-11-24``, a month ``2026-11``."""
    return f"{period:%Y-%m}" if scope == Scope.MONTH else period.isoformat()


def next_run_number(session: Session, scope: Scope, period: dt.date) -> int:
    last = session.execute(
        select(func.max(SettlementRun.run)).where(
            SettlementRun.scope == int(scope), SettlementRun.period == period
        )
    ).scalar()
    return int(last or 0) + 1


def record_run(
    session: Session,
    scope: Scope,
    period: dt.date,
    posted: Posted,
    *,
    value_date: dt.date,
    now: dt.datetime | None = None,
) -> Run:
    """Record this settlement as the period's next run, with one instruction per party for the
    change ``posted`` made to its net position (SPEC v1.2 §8); call it in the transaction that
    posted, so a run and its entry commit or vanish together. A run that changed nothing is
    still recorded (its file lists no instruction)."""
    number = next_run_number(session, scope, period)
    instructions = run_instructions(
        posted.changes, period_label(scope, period), number, value_date
    )
    row = SettlementRun(
        scope=int(scope),
        period=period,
        run=number,
        entry_id=posted.entry_id,
        reason=posted.reason.value,
        created_at=now or dt.datetime.now(dt.UTC),
    )
    session.add(row)
    session.flush()
    session.add_all(
        InstructionRow(
            instruction_id=i.instruction_id,
            run_id=row.id,
            n=i.n,
            value_date=i.value_date,
            party_role=int(i.party.role),
            party_code=i.party.code,
            direction=int(i.direction),
            amount_fen=i.amount_fen,
        )
        for i in instructions
    )
    session.flush()
    return Run(scope, period, number, posted.entry_id, posted.reason, tuple(instructions))


def post_run(
    session: Session,
    period: dt.date,
    scope: Scope,
    target: Mapping[AccountKey, int],
    reason: Reason,
    *,
    value_date: dt.date,
    now: dt.datetime | None = None,
) -> tuple[Posted, Run]:
    """``post_difference`` and ``record_run`` in one go: what a settlement or a month close
    calls inside its ``ledger_transaction``."""
    posted = post_difference(session, period, scope, target, reason, now=now)
    return posted, record_run(session, scope, period, posted, value_date=value_date, now=now)


def load_runs(
    session: Session, scope: Scope | None = None, period: dt.date | None = None
) -> list[Run]:
    """Stored runs with their instructions, by (scope, period, run)."""
    query = select(SettlementRun).order_by(
        SettlementRun.scope, SettlementRun.period, SettlementRun.run
    )
    if scope is not None:
        query = query.where(SettlementRun.scope == int(scope))
    if period is not None:
        query = query.where(SettlementRun.period == period)
    runs = session.execute(query).scalars().all()
    by_run: dict[int, list[Instruction]] = defaultdict(list)
    if runs:
        rows = session.execute(
            select(InstructionRow)
            .where(InstructionRow.run_id.in_([r.id for r in runs]))
            .order_by(InstructionRow.run_id, InstructionRow.n)
        ).scalars()
        for row in rows:
            by_run[row.run_id].append(
                Instruction(
                    instruction_id=row.instruction_id,
                    n=row.n,
                    direction=Direction(row.direction),
                    party=Party(PartyRole(row.party_role), row.party_code),
                    amount_fen=int(row.amount_fen),
                    value_date=row.value_date,
                )
            )
    return [
        Run(
            Scope(r.scope), r.period, r.run, r.entry_id, Reason(r.reason), tuple(by_run[r.id])
        )
        for r in runs
    ]


def check_balanced(amounts: Iterable[int], what: str) -> None:
    total = sum(amounts)
    if total != 0:
        raise LedgerError(
            f"{what} does not balance: postings sum to {total} fen, not 0",
            code=ErrorCode.LEDGER_UNBALANCED,
        )


def ensure_accounts(session: Session, keys: Iterable[AccountKey]) -> dict[AccountKey, int]:
    """Account ids for the keys, creating missing accounts; safe when two settlers race."""
    keys = list(keys)
    rows = [
        {
            "code": k.code,
            "party_role": int(k.party.role),
            "party_code": k.party.code,
            "kind": int(k.kind),
        }
        for k in keys
    ]
    if rows:
        dialect = session.get_bind().dialect.name
        insert = pg_insert if dialect == "postgresql" else sqlite_insert
        session.execute(insert(Account).values(rows).on_conflict_do_nothing())
    codes = {k.code: k for k in keys}
    found = session.execute(select(Account.code, Account.id).where(Account.code.in_(codes))).all()
    return {codes[code]: id_ for code, id_ in found}


def parse_reason(reason: str | Reason) -> Reason:
    try:
        return Reason(reason)
    except ValueError:
        choices = ", ".join(r.value for r in Reason)
        raise StateError(
            f"unknown settlement reason {reason!r} (one of: {choices})",
            code=ErrorCode.SETTLEMENT_BAD_REASON,
        ) from None


# ---------------------------------------------------------------- balances and verification


def account_balances(engine: Engine) -> dict[AccountKey, int]:
    """Every account's balance over all entries (debit > 0)."""
    with Session(engine) as session:
        rows = session.execute(
            select(
                Account.party_role, Account.party_code, Account.kind, func.sum(Posting.amount_fen)
            )
            .join(Posting, Posting.account_id == Account.id)
            .group_by(Account.party_role, Account.party_code, Account.kind)
        ).all()
    return dict(
        sorted(
            (AccountKey(Party(PartyRole(r), c), ObligationKind(k)), int(total))
            for r, c, k, total in rows
        )
    )


def ledger_balances(engine: Engine) -> dict[str, int]:
    """``tongka ledger balances``: account code -> balance in fen (debit > 0), sorted by party.

    A party's net position over all settled periods is minus the sum of its accounts.
    """
    return {key.code: amount for key, amount in account_balances(engine).items()}


def entry_sums(engine: Engine) -> list[tuple[int, dt.date, str, str, int, int]]:
    """(id, day, kind, reason, number of postings, sum of postings) of every entry, in id order."""
    with Session(engine) as session:
        rows = session.execute(
            select(
                JournalEntry.id,
                JournalEntry.day,
                JournalEntry.kind,
                JournalEntry.reason,
                func.count(Posting.id),
                func.coalesce(func.sum(Posting.amount_fen), 0),
            )
            .outerjoin(Posting, Posting.entry_id == JournalEntry.id)
            .group_by(JournalEntry.id, JournalEntry.day, JournalEntry.kind, JournalEntry.reason)
            .order_by(JournalEntry.id)
        ).all()
    return [(i, d, k, r, int(n), int(s)) for i, d, k, r, n, s in rows]


def period_balances(engine: Engine, scope: Scope) -> dict[dt.date, dict[AccountKey, int]]:
    """Posted balances of every period of a scope that has entries."""
    kinds = [k.value for k in SCOPE_KINDS[scope]]
    with Session(engine) as session:
        days = (
            session.execute(select(JournalEntry.day).where(JournalEntry.kind.in_(kinds)).distinct())
            .scalars()
            .all()
        )
        return {d: posted_balances(session, d, scope) for d in sorted(days)}


def verify_ledger(
    engine: Engine,
    recompute: Callable[[dt.date], list[Obligation]],
    recompute_month: Callable[[dt.date], list[Obligation]] | None = None,
    *,
    days: Iterable[dt.date] = (),
) -> list[str]:
    """``tongka ledger verify``: every problem found, as sentences; an empty list means sound.

    Checks that every entry has postings and sums to 0, and that each settled day's (and, given
    ``recompute_month``, each closed month's) posted balances equal a fresh recomputation of
    its obligations. ``days`` adds days that should be settled even if they have no entry yet.
    """
    problems: list[str] = []
    for entry_id, day, kind, reason, count, total in entry_sums(engine):
        if count == 0:
            problems.append(f"entry {entry_id} ({kind}, {day}, {reason}) has no postings")
        if total != 0:
            problems.append(
                f"entry {entry_id} ({kind}, {day}, {reason}) does not balance: {total:+d} fen"
            )
    checks: list[tuple[Scope, Callable[[dt.date], list[Obligation]]]] = [(Scope.DAY, recompute)]
    if recompute_month is not None:
        checks.append((Scope.MONTH, recompute_month))
    for scope, fresh in checks:
        periods = period_balances(engine, scope)
        if scope == Scope.DAY:
            for d in days:
                periods.setdefault(d, {})
        for period, posted in sorted(periods.items()):
            label = f"month {period:%Y-%m}" if scope == Scope.MONTH else f"day {period}"
            for key, delta in difference(target_balances(fresh(period)), posted).items():
                problems.append(
                    f"{label}: account {key.code} holds {posted.get(key, 0)} fen, "
                    f"a fresh recomputation gives {posted.get(key, 0) + delta} ({delta:+d})"
                )
    return problems
