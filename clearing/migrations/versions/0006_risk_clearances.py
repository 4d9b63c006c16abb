"""Issuers' clearings of their cards from the deny list (SPEC §10).

Revision ID: 0006
Revises: 0005

- ``risk_clearances``: one row per card an issuer cleared through a day C (``cleared_through``):
  the card's deny-list signals of days up to C no longer list it on the deny lists of days C
  and after (``clearing.risk_clearances``). A clearing is evidence: append-only like the audit
  trail. Triggers refuse UPDATE and DELETE (and TRUNCATE on PostgreSQL), and
  ``clearing.db.grant_engine_role`` grants the engine role SELECT and INSERT only; a mistaken
  clearing is superseded by a later one, never changed.
- The card token is the deny list's (SPEC §3: a uint64, which neither database's integer
  holds whole), kept as its decimal text.
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # SQLite autoincrements INTEGER keys only
MESSAGE = ("DENYLIST_CLEARING_IMMUTABLE: clearings are never updated or deleted; record a new "
           "one to supersede it")


def upgrade() -> None:
    op.create_table(
        "risk_clearances",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("issuer", sa.Integer(), nullable=False),
        sa.Column("card_token", sa.String(20), nullable=False),
        sa.Column("cleared_through", sa.Date(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("cleared_by", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_risk_clearances"),
        sa.CheckConstraint("length(reason) > 0", name="ck_risk_clearances_reason"),
        sa.CheckConstraint("length(cleared_by) > 0", name="ck_risk_clearances_cleared_by"),
    )
    op.create_index("ix_risk_clearances_issuer", "risk_clearances", ["issuer", "card_token"])

    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE FUNCTION tongka_clearance_immutable() RETURNS trigger LANGUAGE plpgsql AS $$ "
            f"BEGIN RAISE EXCEPTION '{MESSAGE} (% on %)', TG_OP, TG_TABLE_NAME "
            "USING ERRCODE = 'integrity_constraint_violation'; END $$"
        )
        op.execute(
            "CREATE TRIGGER risk_clearances_immutable BEFORE UPDATE OR DELETE ON risk_clearances "
            "FOR EACH ROW EXECUTE FUNCTION tongka_clearance_immutable()"
        )
        op.execute(
            "CREATE TRIGGER risk_clearances_no_truncate BEFORE TRUNCATE ON risk_clearances "
            "FOR EACH STATEMENT EXECUTE FUNCTION tongka_clearance_immutable()"
        )
    else:
        for action in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER risk_clearances_no_{action.lower()} BEFORE {action} "
                f"ON risk_clearances BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END"
            )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS risk_clearances_immutable ON risk_clearances")
        op.execute("DROP TRIGGER IF EXISTS risk_clearances_no_truncate ON risk_clearances")
        op.execute("DROP FUNCTION IF EXISTS tongka_clearance_immutable()")
    else:
        for action in ("update", "delete"):
            op.execute(f"DROP TRIGGER IF EXISTS risk_clearances_no_{action}")
    op.drop_index("ix_risk_clearances_issuer", table_name="risk_clearances")
    op.drop_table("risk_clearances")
