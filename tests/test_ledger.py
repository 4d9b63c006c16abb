"""The ledger's storage contract on both databases: migration 0002 matches the models, posted
rows cannot be updated or deleted, and ``ledger verify`` finds what is wrong."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError
from test_settle_builders import DAY, TARIFFS, leg

from clearing.db import Base
from clearing.legs import legs_table
from settlement.apportion import allocate
from settlement.ledger import (
    LEDGER_TABLES,
    AccountKey,
    LedgerError,
    account_key,
    difference,
    ledger_balances,
    positions_from_balances,
    target_balances,
    verify_ledger,
)
from settlement.obligations import Obligation, ObligationKind, day_obligations
from settlement.parties import CENTRE, government, issuer, operator
from settlement.settle import day_recomputer, settle_day

LEGS = [
    leg(card_id=1),
    leg(card_id=2, issuer=3, charged_fen=200),
    leg(card_id=3, product=1, honoured_product=1, card_discount_fen=40),
]


def _obligations(legs=LEGS, day=DAY) -> list[Obligation]:  # type: ignore[no-untyped-def]
    t = legs_table(legs)
    return day_obligations(t, allocate(t), TARIFFS, day)


def test_migration_creates_what_the_models_describe(engine: Engine) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    ours = [d for d in diffs if any(t in repr(d) for t in LEDGER_TABLES)]
    assert ours == []


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE postings SET amount_fen = amount_fen + 1",
        "DELETE FROM postings",
        "UPDATE journal_entries SET reason = 'manual_correction'",
        "DELETE FROM journal_entries",
        "UPDATE accounts SET party_code = 999",
        "DELETE FROM accounts",
    ],
)
def test_posted_rows_cannot_be_changed(engine: Engine, statement: str) -> None:
    settle_day(engine, DAY, legs_table(LEGS), TARIFFS)
    before = ledger_balances(engine)
    with pytest.raises(DBAPIError, match="LEDGER_IMMUTABLE"), engine.begin() as conn:
        conn.execute(text(statement))
    assert ledger_balances(engine) == before


def test_truncate_is_refused_on_postgresql(engine: Engine) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite has no TRUNCATE")
    settle_day(engine, DAY, legs_table(LEGS), TARIFFS)
    with pytest.raises(DBAPIError, match="LEDGER_IMMUTABLE"), engine.begin() as conn:
        conn.execute(text("TRUNCATE postings CASCADE"))


def test_target_balances_debit_the_debtor_and_credit_the_creditor() -> None:
    obs = [
        Obligation(issuer(1), operator(101), ObligationKind.REVENUE, 300),
        Obligation(operator(101), CENTRE, ObligationKind.FEE, 2),
        Obligation(government(420100), operator(101), ObligationKind.SUBSIDY, 40),
    ]
    got = {k.code: v for k, v in target_balances(obs).items()}
    assert got == {
        "ISS-1:REVENUE": 300,
        "OPR-101:REVENUE": -300,
        "OPR-101:FEE": 2,
        "CTR-0:FEE": -2,
        "OPR-101:SUBSIDY": -40,
        "GOV-420100:SUBSIDY": 40,
    }
    assert positions_from_balances(target_balances(obs)) == {
        issuer(1): -300,
        operator(101): 338,
        government(420100): -40,
        CENTRE: 2,
    }


def test_chart_of_accounts_refuses_an_account_a_role_cannot_have() -> None:
    with pytest.raises(LedgerError, match="no fee account"):
        account_key(issuer(1), ObligationKind.FEE)
    assert account_key(CENTRE, ObligationKind.FEE) == AccountKey(CENTRE, ObligationKind.FEE)


def test_difference_is_what_turns_posted_into_target() -> None:
    a, b = (
        AccountKey(issuer(1), ObligationKind.REVENUE),
        AccountKey(operator(1), ObligationKind.REVENUE),
    )
    assert difference({a: 5, b: -5}, {a: 3, b: -3}) == {a: 2, b: -2}
    assert difference({a: 5, b: -5}, {a: 5, b: -5}) == {}
    assert difference({}, {a: 5, b: -5}) == {a: -5, b: 5}


def test_verify_passes_on_a_sound_ledger_and_lists_differences(engine: Engine) -> None:
    settle_day(engine, DAY, legs_table(LEGS), TARIFFS)
    other = DAY + dt.timedelta(days=1)
    legs_other = [leg(service_day=LEGS[0].service_day + 1, charged_fen=180)]
    settle_day(engine, other, legs_table(legs_other), TARIFFS)
    fresh = {DAY: _obligations(), other: _obligations(legs_other, other)}
    assert verify_ledger(engine, lambda d: fresh[d]) == []
    stored = {DAY: legs_table(LEGS), other: legs_table(legs_other)}
    assert verify_ledger(engine, day_recomputer(stored.__getitem__, TARIFFS)) == []

    # A recomputation that disagrees (say the stored legs changed) is listed account by account.
    changed = dict(fresh)
    changed[DAY] = _obligations(LEGS[:2])
    problems = verify_ledger(engine, lambda d: changed[d])
    assert problems and all(p.startswith(f"day {DAY}") for p in problems)
    assert any("ISS-1:REVENUE" in p for p in problems)
    # A day that should be settled but has no entry is a difference too.
    third = DAY + dt.timedelta(days=2)
    missing = verify_ledger(engine, lambda d: fresh.get(d, fresh[DAY]), days=[third])
    assert any(p.startswith(f"day {third}") for p in missing)


def test_verify_finds_an_unbalanced_entry(engine: Engine) -> None:
    settle_day(engine, DAY, legs_table(LEGS), TARIFFS)
    # An entry written around the engine that does not balance is exactly what verify must
    # catch. PostgreSQL refuses one at commit (migration 0003); only a superuser switching
    # triggers off (replica mode) can write one there, SQLite has no deferred trigger.
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("SET LOCAL session_replication_role = replica"))
        conn.execute(
            text(
                "INSERT INTO journal_entries (day, kind, reason, created_at) "
                "VALUES (:d, 'adjustment', 'manual_correction', :t)"
            ),
            {"d": DAY, "t": dt.datetime.now(dt.UTC)},
        )
        entry = conn.execute(text("SELECT max(id) FROM journal_entries")).scalar()
        account = conn.execute(text("SELECT min(id) FROM accounts")).scalar()
        conn.execute(
            text("INSERT INTO postings (entry_id, account_id, amount_fen) VALUES (:e, :a, 7)"),
            {"e": entry, "a": account},
        )
    problems = verify_ledger(engine, lambda d: _obligations())
    assert any(f"entry {entry}" in p and "does not balance: +7 fen" in p for p in problems)
