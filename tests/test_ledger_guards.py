"""SPEC v1.2 §8 ledger guards: the database refuses an unbalanced entry at commit, and the role
the engine runs as may read and append to the ledger but neither rewrite it nor switch its
triggers off; schema changes run as a separate owner role (PostgreSQL). On SQLite the engine
refuses an unbalanced entry before it commits."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, make_url, text
from sqlalchemy.exc import DBAPIError, IntegrityError
from test_settle_builders import TARIFFS
from test_settle_builders import leg as _leg

from clearing.db import DatabaseError, make_engine
from clearing.legs import Leg, legs_table
from clearing.service_day import day_number
from settlement.ledger import (
    EntryKind,
    LedgerError,
    Reason,
    Scope,
    account_key,
    ensure_accounts,
    entry_sums,
    ledger_transaction,
    post_entry,
)
from settlement.obligations import ObligationKind
from settlement.parties import government, issuer, operator
from settlement.settle import settle_day
from tongka.schema import upgrade

# A day of its own: settlement locks are per day across the whole PostgreSQL database, and
# other test modules settle the builders' DAY at the same time.
DAY = dt.date(2024, 3, 7)


def leg(**fields: int) -> Leg:
    return _leg(service_day=day_number(DAY), **fields)


LEGS = [leg(card_id=1), leg(card_id=2, issuer=3, charged_fen=200)]
PG_ONLY = pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)


@dataclass
class Roles:
    owner: Engine  # owns the schema's tables, runs migrations
    engine: Engine  # what tongka runs as: a plain login role
    admin: Engine  # the test's superuser
    engine_role: str


@pytest.fixture
def roles(db_url: str) -> Iterator[Roles]:
    """Two fresh non-superuser login roles on the test's own schema, dropped afterwards."""
    admin = create_engine(db_url)
    suffix = uuid.uuid4().hex[:10]
    owner_role, engine_role = f"tk_owner_{suffix}", f"tk_engine_{suffix}"
    with admin.begin() as conn:
        schema = conn.execute(text("SELECT current_schema()")).scalar_one()
        for role in (owner_role, engine_role):
            conn.execute(text(f"CREATE ROLE {role} LOGIN NOSUPERUSER NOCREATEROLE NOCREATEDB"))
        # The database admin's part: the owner may create in the schema, the engine may use it.
        conn.execute(text(f'GRANT USAGE, CREATE ON SCHEMA "{schema}" TO {owner_role}'))
        conn.execute(text(f'GRANT USAGE ON SCHEMA "{schema}" TO {engine_role}'))
    url = make_url(db_url)
    owner = make_engine(url.set(username=owner_role).render_as_string(hide_password=False))
    eng = make_engine(url.set(username=engine_role).render_as_string(hide_password=False))
    try:
        yield Roles(owner, eng, admin, engine_role)
    finally:
        owner.dispose()
        eng.dispose()
        with admin.begin() as conn:
            conn.execute(text(f"DROP OWNED BY {owner_role}, {engine_role} CASCADE"))
            conn.execute(text(f"DROP ROLE {owner_role}"))
            conn.execute(text(f"DROP ROLE {engine_role}"))
        admin.dispose()


def _refused(engine: Engine, statement: str) -> DBAPIError:
    with pytest.raises(DBAPIError) as err, engine.begin() as conn:
        conn.execute(text(statement))
    return err.value


@PG_ONLY
def test_the_engine_role_alone_cannot_migrate(roles: Roles) -> None:
    with pytest.raises(DatabaseError) as err:
        upgrade(roles.engine)
    assert err.value.code == "DB_UPGRADE_NEEDS_OWNER"


@PG_ONLY
def test_a_privileged_engine_role_is_refused(roles: Roles) -> None:
    for privileged in (roles.owner, roles.admin):  # the owner itself; a superuser
        with pytest.raises(DatabaseError) as err:
            upgrade(privileged, owner_engine=roles.owner)
        assert err.value.code == "DB_ENGINE_ROLE_PRIVILEGED"


@PG_ONLY
def test_the_engine_role_settles_but_cannot_rewrite_or_unguard_the_ledger(roles: Roles) -> None:
    upgrade(roles.engine, owner_engine=roles.owner)
    upgrade(roles.engine)  # what every command does: at head it needs no privilege
    result = settle_day(roles.engine, DAY, legs_table(LEGS), TARIFFS)
    assert result.entry_id is not None and result.run == 1 and result.instructions
    before = entry_sums(roles.engine)
    for statement in [
        "UPDATE postings SET amount_fen = amount_fen",
        "DELETE FROM postings",
        "TRUNCATE postings CASCADE",
        "UPDATE journal_entries SET reason = 'manual_correction'",
        "DELETE FROM accounts",
        "UPDATE payment_instructions SET amount_fen = amount_fen + 1",
        "DELETE FROM settlement_runs",
        "ALTER TABLE postings DISABLE TRIGGER ALL",
        "ALTER TABLE postings DISABLE TRIGGER postings_balanced",
        "DROP TRIGGER postings_immutable ON postings",
        "DROP TRIGGER postings_balanced ON postings",
        "DROP TABLE postings CASCADE",
        "ALTER TABLE postings DROP CONSTRAINT ck_postings_nonzero",
        "SET session_replication_role = replica",
    ]:
        err = _refused(roles.engine, statement)
        # 42501: refused for lack of privilege, before any trigger had to step in
        assert getattr(err.orig, "sqlstate", None) == "42501", (statement, err)
    assert entry_sums(roles.engine) == before


@PG_ONLY
def test_the_engine_role_gets_exactly_its_grants(roles: Roles) -> None:
    upgrade(roles.engine, owner_engine=roles.owner)
    with roles.admin.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT table_name, privilege_type FROM information_schema.role_table_grants "
                "WHERE grantee = :r AND table_schema = current_schema()"
            ),
            {"r": roles.engine_role},
        ).all()
    grants: dict[str, set[str]] = {}
    for table, privilege in rows:
        grants.setdefault(table, set()).add(privilege)
    for table in ("accounts", "journal_entries", "postings", "settlement_runs",
                  "payment_instructions"):
        assert grants[table] == {"SELECT", "INSERT"}, table
    for table in ("batches", "quarantine", "service_days"):
        assert grants[table] == {"SELECT", "INSERT", "UPDATE"}, table
    assert grants["alembic_version"] == {"SELECT"}


@PG_ONLY
def test_an_unbalanced_insert_fails_at_commit_not_before(roles: Roles) -> None:
    upgrade(roles.engine, owner_engine=roles.owner)
    settle_day(roles.engine, DAY, legs_table(LEGS), TARIFFS)
    before = entry_sums(roles.engine)

    def write(amounts: list[int]) -> None:
        with roles.engine.connect() as conn:
            trans = conn.begin()
            entry = conn.execute(
                text(
                    "INSERT INTO journal_entries (day, kind, reason, created_at) "
                    "VALUES (:d, 'adjustment', 'manual_correction', :t) RETURNING id"
                ),
                {"d": DAY, "t": dt.datetime.now(dt.UTC)},
            ).scalar_one()
            accounts = conn.execute(text("SELECT id FROM accounts ORDER BY id")).scalars().all()
            for account, amount in zip(accounts, amounts, strict=False):
                conn.execute(
                    text("INSERT INTO postings (entry_id, account_id, amount_fen) "
                         "VALUES (:e, :a, :x)"),
                    {"e": entry, "a": account, "x": amount},
                )
            trans.commit()  # the statements above all succeeded: the check is deferred

    with pytest.raises(IntegrityError, match="LEDGER_UNBALANCED"):
        write([7, -5])
    assert entry_sums(roles.engine) == before
    write([7, -7])  # a balanced entry written by hand is an entry like any other
    assert len(entry_sums(roles.engine)) == len(before) + 1


def test_an_unbalanced_entry_is_refused_before_commit(engine: Engine) -> None:
    # Both databases: post_entry leaves the balance to the commit, which refuses it.
    amounts = {
        account_key(issuer(1), ObligationKind.REVENUE): 7,
        account_key(operator(101), ObligationKind.REVENUE): -5,
    }
    with pytest.raises(LedgerError) as err:
        with ledger_transaction(engine, Scope.DAY, DAY) as session:
            post_entry(session, DAY, EntryKind.SETTLEMENT, Reason.INITIAL, amounts)
    assert err.value.code == "LEDGER_UNBALANCED"
    assert entry_sums(engine) == []


def test_raw_postings_inside_a_settlement_are_checked_too(engine: Engine) -> None:
    settle_day(engine, DAY, legs_table(LEGS), TARIFFS)
    before = entry_sums(engine)
    with pytest.raises(LedgerError, match="sums to \\+3 fen"):
        with ledger_transaction(engine, Scope.DAY, DAY) as session:
            # an entry written by hand, around post_entry
            entry = session.execute(
                text(
                    "INSERT INTO journal_entries (day, kind, reason, created_at) "
                    "VALUES (:d, 'adjustment', 'manual_correction', :t) RETURNING id"
                ),
                {"d": DAY, "t": dt.datetime.now(dt.UTC)},
            ).scalar_one()
            key = account_key(government(420200), ObligationKind.SUBSIDY)
            account = ensure_accounts(session, [key])[key]
            session.execute(
                text("INSERT INTO postings (entry_id, account_id, amount_fen) "
                     "VALUES (:e, :a, 3)"),
                {"e": entry, "a": account},
            )
    assert entry_sums(engine) == before


def test_an_entry_named_by_a_run_is_sealed(engine: Engine) -> None:
    # Both databases, at once (no deferral): a run's entry takes no more postings, and a run
    # cannot name an entry that does not balance.
    result = settle_day(engine, DAY, legs_table(LEGS), TARIFFS)
    before = entry_sums(engine)
    with engine.connect() as conn:
        account = conn.execute(text("SELECT max(id) FROM accounts")).scalar_one()
    with pytest.raises(DBAPIError, match="LEDGER_SEALED"), engine.begin() as conn:
        conn.execute(
            text("INSERT INTO postings (entry_id, account_id, amount_fen) VALUES (:e, :a, 1)"),
            {"e": result.entry_id, "a": account},
        )
    with pytest.raises(DBAPIError, match="LEDGER_UNBALANCED"), engine.begin() as conn:
        entry = conn.execute(
            text(
                "INSERT INTO journal_entries (day, kind, reason, created_at) "
                "VALUES (:d, 'adjustment', 'manual_correction', :t) RETURNING id"
            ),
            {"d": DAY, "t": dt.datetime.now(dt.UTC)},
        ).scalar_one()
        conn.execute(
            text("INSERT INTO postings (entry_id, account_id, amount_fen) VALUES (:e, :a, 5)"),
            {"e": entry, "a": account},
        )
        conn.execute(
            text(
                "INSERT INTO settlement_runs (scope, period, run, entry_id, reason, created_at) "
                "VALUES (0, :d, 9, :e, 'manual_correction', :t)"
            ),
            {"d": DAY, "e": entry, "t": dt.datetime.now(dt.UTC)},
        )
    assert entry_sums(engine) == before


def test_an_owner_role_needs_postgresql(tmp_path: Path) -> None:
    sqlite = make_engine(f"sqlite:///{tmp_path / 'one.sqlite'}")
    with pytest.raises(DatabaseError) as err:
        upgrade(sqlite, owner_engine=sqlite)
    assert err.value.code == "DB_ROLES_NEED_POSTGRESQL"
    upgrade(sqlite)  # one role, as before
    sqlite.dispose()
