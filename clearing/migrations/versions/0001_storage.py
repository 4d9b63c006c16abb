"""Storage of ingestion: batches, quarantined rows, service days.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # SQLite autoincrements INTEGER keys only


def upgrade() -> None:
    op.create_table(
        "batches",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("file_sha256", sa.String(64), nullable=False),
        sa.Column("service_day", sa.Date(), nullable=False),
        sa.Column("day_seq", sa.Integer(), nullable=False),
        sa.Column("operator", sa.Integer(), nullable=False),
        sa.Column("source_format", sa.String(32), nullable=False),
        sa.Column("source_name", sa.String(255), nullable=False),
        sa.Column("status", sa.String(24), nullable=False),
        sa.Column("late", sa.Boolean(), nullable=False),
        sa.Column("received", sa.BigInteger(), nullable=False),
        sa.Column("accepted", sa.BigInteger(), nullable=False),
        sa.Column("duplicates", sa.BigInteger(), nullable=False),
        sa.Column("quarantined", sa.BigInteger(), nullable=False),
        sa.Column("tap_path", sa.String(255), nullable=True),
        sa.Column("errors_json", sa.Text(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("accepted_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_batches"),
        # SPEC §4: the same bytes twice are one batch, even from two processes at once.
        sa.UniqueConstraint("file_sha256", name="uq_batches_file_sha256"),
        sa.UniqueConstraint("service_day", "day_seq", name="uq_batches_day_seq"),
    )
    op.create_index("ix_batches_service_day", "batches", ["service_day"])
    op.create_table(
        "quarantine",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("batch_id", ID, nullable=False),
        sa.Column("row", sa.BigInteger(), nullable=False),
        sa.Column("code", sa.String(48), nullable=False),
        sa.Column("field", sa.String(64), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("record", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("resubmitted_batch_id", ID, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_quarantine"),
        sa.ForeignKeyConstraint(["batch_id"], ["batches.id"],
                                name="fk_quarantine_batch_id_batches"),
        sa.ForeignKeyConstraint(["resubmitted_batch_id"], ["batches.id"],
                                name="fk_quarantine_resubmitted_batch_id_batches"),
    )
    op.create_index("ix_quarantine_batch_id", "quarantine", ["batch_id"])
    op.create_index("ix_quarantine_code", "quarantine", ["code"])
    op.create_table(
        "service_days",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("status", sa.String(24), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("settled_revision", sa.Integer(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("day", name="pk_service_days"),
    )


def downgrade() -> None:
    op.drop_table("service_days")
    op.drop_index("ix_quarantine_code", table_name="quarantine")
    op.drop_index("ix_quarantine_batch_id", table_name="quarantine")
    op.drop_table("quarantine")
    op.drop_index("ix_batches_service_day", table_name="batches")
    op.drop_table("batches")
