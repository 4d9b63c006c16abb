"""Ledger guards (SPEC v1.2 §8): settlement runs and their payment instructions, balanced entries.

Revision ID: 0003
Revises: 0002

- ``settlement_runs`` and ``payment_instructions``: every settlement of a day (or month close)
  is a run, and its instructions are stored with it, once; like the ledger they are never
  updated or deleted (the same triggers as 0002), so an instruction id is never reused.
- PostgreSQL refuses, at COMMIT, a journal entry whose postings do not sum to 0: a DEFERRABLE
  INITIALLY DEFERRED constraint trigger on ``postings`` (a row trigger can only see a whole
  entry once the transaction ends). SQLite has no deferred triggers: the engine checks the same
  before it commits (``settlement.ledger.ledger_transaction``).
- Both databases: an entry named by a settlement run is **sealed**. The run is recorded after
  the entry's last posting, so a trigger refuses a run whose entry does not balance, and a
  posting to an entry that a run already names. This is the sound part of the check that
  SQLite's row triggers can do (they cannot see a transaction's end).

Privileges (an engine role that may only SELECT and INSERT the ledger) are granted by
``clearing.db.grant_engine_role`` after the migrations (``tongka.schema.upgrade`` with an owner
role), since role names are the deployment's.
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # SQLite autoincrements INTEGER keys only
NEW_TABLES = ("settlement_runs", "payment_instructions")
MESSAGE = "LEDGER_IMMUTABLE: posted ledger rows are never updated or deleted; post an adjustment"

# Runs as its owner's search_path (SET ... FROM CURRENT), so the engine role's own search_path
# cannot point ``postings`` at another table.
BALANCE_FUNCTION = """
CREATE FUNCTION tongka_entry_balanced() RETURNS trigger LANGUAGE plpgsql
SET search_path FROM CURRENT AS $$
DECLARE total bigint;
BEGIN
    SELECT coalesce(sum(amount_fen), 0) INTO total FROM postings WHERE entry_id = NEW.entry_id;
    IF total <> 0 THEN
        RAISE EXCEPTION 'LEDGER_UNBALANCED: journal entry % postings sum to % fen, not 0',
            NEW.entry_id, total USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NULL;
END $$
"""


SEAL_FUNCTIONS = (
    """
CREATE FUNCTION tongka_run_entry_balanced() RETURNS trigger LANGUAGE plpgsql
SET search_path FROM CURRENT AS $$
BEGIN
    IF NEW.entry_id IS NOT NULL AND (SELECT coalesce(sum(amount_fen), 0) FROM postings
                                     WHERE entry_id = NEW.entry_id) <> 0 THEN
        RAISE EXCEPTION 'LEDGER_UNBALANCED: the entry of a settlement run must sum to 0 fen'
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END $$
""",
    """
CREATE FUNCTION tongka_entry_sealed() RETURNS trigger LANGUAGE plpgsql
SET search_path FROM CURRENT AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM settlement_runs WHERE entry_id = NEW.entry_id) THEN
        RAISE EXCEPTION 'LEDGER_SEALED: journal entry % belongs to a settlement run', NEW.entry_id
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END $$
""",
)
SQLITE_SEALS = (
    "CREATE TRIGGER settlement_runs_balanced BEFORE INSERT ON settlement_runs "
    "WHEN NEW.entry_id IS NOT NULL AND (SELECT coalesce(sum(amount_fen), 0) FROM postings "
    "WHERE entry_id = NEW.entry_id) <> 0 "
    "BEGIN SELECT RAISE(ABORT, 'LEDGER_UNBALANCED: the entry of a settlement run must sum to "
    "0 fen'); END",
    "CREATE TRIGGER postings_sealed BEFORE INSERT ON postings "
    "WHEN EXISTS (SELECT 1 FROM settlement_runs WHERE entry_id = NEW.entry_id) "
    "BEGIN SELECT RAISE(ABORT, 'LEDGER_SEALED: the journal entry belongs to a settlement "
    "run'); END",
)


def upgrade() -> None:
    op.create_table(
        "settlement_runs",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("scope", sa.SmallInteger(), nullable=False),
        sa.Column("period", sa.Date(), nullable=False),
        sa.Column("run", sa.Integer(), nullable=False),
        sa.Column("entry_id", ID, nullable=True),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_settlement_runs"),
        sa.ForeignKeyConstraint(
            ["entry_id"], ["journal_entries.id"],
            name="fk_settlement_runs_entry_id_journal_entries",
        ),
        sa.UniqueConstraint("scope", "period", "run", name="uq_settlement_runs_scope"),
        sa.UniqueConstraint("entry_id", name="uq_settlement_runs_entry_id"),
        sa.CheckConstraint("run >= 1", name="ck_settlement_runs_run_positive"),
    )
    op.create_table(
        "payment_instructions",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("instruction_id", sa.String(40), nullable=False),
        sa.Column("run_id", ID, nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.Column("value_date", sa.Date(), nullable=False),
        sa.Column("party_role", sa.SmallInteger(), nullable=False),
        sa.Column("party_code", sa.Integer(), nullable=False),
        sa.Column("direction", sa.SmallInteger(), nullable=False),
        sa.Column("amount_fen", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_payment_instructions"),
        sa.ForeignKeyConstraint(
            ["run_id"], ["settlement_runs.id"],
            name="fk_payment_instructions_run_id_settlement_runs",
        ),
        sa.UniqueConstraint("instruction_id", name="uq_payment_instructions_instruction_id"),
        sa.UniqueConstraint("run_id", "n", name="uq_payment_instructions_run_id"),
        sa.CheckConstraint("amount_fen > 0", name="ck_payment_instructions_positive"),
        sa.CheckConstraint("direction IN (0, 1)", name="ck_payment_instructions_direction"),
    )
    op.create_index("ix_payment_instructions_run_id", "payment_instructions", ["run_id"])

    if op.get_bind().dialect.name == "postgresql":
        for table in NEW_TABLES:  # tongka_ledger_immutable() comes from 0002
            op.execute(
                f"CREATE TRIGGER {table}_immutable BEFORE UPDATE OR DELETE ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION tongka_ledger_immutable()"
            )
            op.execute(
                f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
                "FOR EACH STATEMENT EXECUTE FUNCTION tongka_ledger_immutable()"
            )
        op.execute(BALANCE_FUNCTION)
        op.execute(
            "CREATE CONSTRAINT TRIGGER postings_balanced AFTER INSERT ON postings "
            "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION tongka_entry_balanced()"
        )
        for function in SEAL_FUNCTIONS:
            op.execute(function)
        op.execute(
            "CREATE TRIGGER settlement_runs_balanced BEFORE INSERT ON settlement_runs "
            "FOR EACH ROW EXECUTE FUNCTION tongka_run_entry_balanced()"
        )
        op.execute(
            "CREATE TRIGGER postings_sealed BEFORE INSERT ON postings "
            "FOR EACH ROW EXECUTE FUNCTION tongka_entry_sealed()"
        )
    else:
        for table in NEW_TABLES:
            for action in ("UPDATE", "DELETE"):
                op.execute(
                    f"CREATE TRIGGER {table}_no_{action.lower()} BEFORE {action} ON {table} "
                    f"BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END"
                )
        for statement in SQLITE_SEALS:
            op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS postings_balanced ON postings")
        op.execute("DROP TRIGGER IF EXISTS postings_sealed ON postings")
        op.execute("DROP TRIGGER IF EXISTS settlement_runs_balanced ON settlement_runs")
        for function in ("entry_balanced", "entry_sealed", "run_entry_balanced"):
            op.execute(f"DROP FUNCTION IF EXISTS tongka_{function}()")
        for table in NEW_TABLES:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_immutable ON {table}")
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}")
    else:
        for trigger in ("postings_sealed", "settlement_runs_balanced"):
            op.execute(f"DROP TRIGGER IF EXISTS {trigger}")
        for table in NEW_TABLES:
            for action in ("update", "delete"):
                op.execute(f"DROP TRIGGER IF EXISTS {table}_no_{action}")
    op.drop_index("ix_payment_instructions_run_id", table_name="payment_instructions")
    op.drop_table("payment_instructions")
    op.drop_table("settlement_runs")
