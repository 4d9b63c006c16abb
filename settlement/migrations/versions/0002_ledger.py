"""The settlement ledger: accounts, journal entries, postings, and triggers keeping them immutable.

Revision ID: 0002
Revises: 0001

Posted rows are never edited or deleted (SPEC §8): the database itself refuses UPDATE and
DELETE on the three ledger tables (SQLite triggers; a PostgreSQL trigger function, which also
refuses TRUNCATE), so not even a hand-typed SQL statement can rewrite history.
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

LEDGER_TABLES = ("accounts", "journal_entries", "postings")
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # SQLite autoincrements INTEGER keys only
MESSAGE = "LEDGER_IMMUTABLE: posted ledger rows are never updated or deleted; post an adjustment"


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("code", sa.String(40), nullable=False),
        sa.Column("party_role", sa.SmallInteger(), nullable=False),
        sa.Column("party_code", sa.Integer(), nullable=False),
        sa.Column("kind", sa.SmallInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_accounts"),
        sa.UniqueConstraint("code", name="uq_accounts_code"),
        sa.UniqueConstraint("party_role", "party_code", "kind", name="uq_accounts_party_role"),
    )
    op.create_table(
        "journal_entries",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_journal_entries"),
        sa.CheckConstraint(
            "kind IN ('settlement', 'adjustment', 'month_close')", name="ck_journal_entries_kind"
        ),
        sa.CheckConstraint(
            "reason IN ('initial', 'late_batch', 'tariff_correction', 'manual_correction')",
            name="ck_journal_entries_reason",
        ),
    )
    op.create_index("ix_journal_entries_day_kind", "journal_entries", ["day", "kind"])
    op.create_table(
        "postings",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("entry_id", ID, nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("amount_fen", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_postings"),
        sa.ForeignKeyConstraint(
            ["entry_id"], ["journal_entries.id"], name="fk_postings_entry_id_journal_entries"
        ),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name="fk_postings_account_id_accounts"
        ),
        sa.UniqueConstraint("entry_id", "account_id", name="uq_postings_entry_id"),
        sa.CheckConstraint("amount_fen <> 0", name="ck_postings_nonzero"),
    )
    op.create_index("ix_postings_entry_id", "postings", ["entry_id"])
    op.create_index("ix_postings_account_id", "postings", ["account_id"])

    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE FUNCTION tongka_ledger_immutable() RETURNS trigger LANGUAGE plpgsql AS $$ "
            f"BEGIN RAISE EXCEPTION '{MESSAGE} (% on %)', TG_OP, TG_TABLE_NAME "
            "USING ERRCODE = 'integrity_constraint_violation'; END $$"
        )
        for table in LEDGER_TABLES:
            op.execute(
                f"CREATE TRIGGER {table}_immutable BEFORE UPDATE OR DELETE ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION tongka_ledger_immutable()"
            )
            op.execute(
                f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
                "FOR EACH STATEMENT EXECUTE FUNCTION tongka_ledger_immutable()"
            )
    else:
        for table in LEDGER_TABLES:
            for action in ("UPDATE", "DELETE"):
                op.execute(
                    f"CREATE TRIGGER {table}_no_{action.lower()} BEFORE {action} ON {table} "
                    f"BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END"
                )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in LEDGER_TABLES:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_immutable ON {table}")
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}")
        op.execute("DROP FUNCTION IF EXISTS tongka_ledger_immutable()")
    else:
        for table in LEDGER_TABLES:
            for action in ("update", "delete"):
                op.execute(f"DROP TRIGGER IF EXISTS {table}_no_{action}")
    op.drop_index("ix_postings_account_id", table_name="postings")
    op.drop_index("ix_postings_entry_id", table_name="postings")
    op.drop_table("postings")
    op.drop_index("ix_journal_entries_day_kind", table_name="journal_entries")
    op.drop_table("journal_entries")
    op.drop_table("accounts")
