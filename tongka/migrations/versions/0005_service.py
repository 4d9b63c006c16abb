"""The clearing centre as a service: API keys, the audit trail and settlement jobs.

Revision ID: 0005
Revises: 0004

- ``api_keys``: one row per key; the key itself is never stored, only its scrypt hash
  (``tongka.access``). ``key_id`` is the key's public part, so a request finds its row without
  hashing against every key.
- ``audit_events``: every request that changes something and every refused one (who, role,
  what, which resource, outcome, when). Append-only like the ledger: triggers refuse UPDATE and
  DELETE (and TRUNCATE on PostgreSQL), and ``clearing.db.grant_engine_role`` grants the engine
  role SELECT and INSERT only.
- ``jobs``: settlement jobs run off the request path by the server's worker (``tongka.jobs``).
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # SQLite autoincrements INTEGER keys only
MESSAGE = "AUDIT_IMMUTABLE: audit events are never updated or deleted"


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("key_id", sa.String(24), nullable=False),
        sa.Column("secret_hash", sa.String(200), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("party", sa.Integer(), nullable=True),
        sa.Column("label", sa.String(200), nullable=False, server_default=""),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_api_keys"),
        sa.UniqueConstraint("key_id", name="uq_api_keys_key_id"),
        sa.CheckConstraint(
            "role IN ('operator', 'issuer', 'finance', 'auditor', 'admin')",
            name="ck_api_keys_role",
        ),
        sa.CheckConstraint(
            "(role IN ('operator', 'issuer')) = (party IS NOT NULL)", name="ck_api_keys_party"
        ),
    )
    op.create_table(
        "audit_events",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("key_id", sa.String(24), nullable=True),
        sa.Column("role", sa.String(24), nullable=True),
        sa.Column("action", sa.String(120), nullable=False),
        sa.Column("resource", sa.String(300), nullable=False, server_default=""),
        sa.Column("outcome", sa.Integer(), nullable=False),
        sa.Column("detail", sa.String(300), nullable=False, server_default=""),
        sa.PrimaryKeyConstraint("id", name="pk_audit_events"),
    )
    op.create_index("ix_audit_events_at", "audit_events", ["at"])
    op.create_table(
        "jobs",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(24), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(32), nullable=False, server_default=""),
        sa.Column("progress", sa.String(200), nullable=False, server_default=""),
        sa.Column("result", sa.Text(), nullable=True),
        sa.Column("error_code", sa.String(48), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("key_id", sa.String(24), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_jobs"),
        sa.CheckConstraint(
            "state IN ('queued', 'running', 'succeeded', 'failed')", name="ck_jobs_state"
        ),
    )
    op.create_index("ix_jobs_day_state", "jobs", ["day", "state"])

    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE FUNCTION tongka_audit_immutable() RETURNS trigger LANGUAGE plpgsql AS $$ "
            f"BEGIN RAISE EXCEPTION '{MESSAGE} (% on %)', TG_OP, TG_TABLE_NAME "
            "USING ERRCODE = 'integrity_constraint_violation'; END $$"
        )
        op.execute(
            "CREATE TRIGGER audit_events_immutable BEFORE UPDATE OR DELETE ON audit_events "
            "FOR EACH ROW EXECUTE FUNCTION tongka_audit_immutable()"
        )
        op.execute(
            "CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events "
            "FOR EACH STATEMENT EXECUTE FUNCTION tongka_audit_immutable()"
        )
    else:
        for action in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER audit_events_no_{action.lower()} BEFORE {action} ON audit_events "
                f"BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END"
            )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS audit_events_immutable ON audit_events")
        op.execute("DROP TRIGGER IF EXISTS audit_events_no_truncate ON audit_events")
        op.execute("DROP FUNCTION IF EXISTS tongka_audit_immutable()")
    else:
        for action in ("update", "delete"):
            op.execute(f"DROP TRIGGER IF EXISTS audit_events_no_{action}")
    op.drop_index("ix_jobs_day_state", table_name="jobs")
    op.drop_table("jobs")
    op.drop_index("ix_audit_events_at", table_name="audit_events")
    op.drop_table("audit_events")
    op.drop_table("api_keys")
