"""Batch withdrawal and sealed raw records of quarantined rows (SPEC v1.2 §4).

Revision ID: 0004
Revises: 0003

- A batch's identity (the SHA-256 of its bytes) is unique among the batches that are not
  withdrawn only: a partial unique index replaces the unique constraint, so withdrawn bytes
  can be submitted again, and the same bytes twice are still one batch.
- ``batches`` records the withdrawal (time, reason) and where the batch's duplicate rows are
  kept (``dup_path``), so that re-acceptance after a withdrawal can reconsider them.
- ``quarantine.raw_sealed`` holds each rejected row's raw record, AES-GCM sealed
  (``clearing.sealed``): raw records may hold personal numbers (docs/pii.md).
"""

from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

LIVE = "status <> 'withdrawn'"


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    with _quarantine_parked(sqlite):
        with op.batch_alter_table("batches", recreate="always" if sqlite else "auto") as b:
            b.drop_constraint("uq_batches_file_sha256", type_="unique")
            b.add_column(sa.Column("dup_path", sa.String(255), nullable=True))
            b.add_column(sa.Column("withdrawn_at", sa.DateTime(timezone=True), nullable=True))
            b.add_column(sa.Column("withdrawn_reason", sa.Text(), nullable=True))
    op.create_index("uq_batches_live_sha256", "batches", ["file_sha256"], unique=True,
                    sqlite_where=sa.text(LIVE), postgresql_where=sa.text(LIVE))
    with op.batch_alter_table("quarantine") as q:
        q.add_column(sa.Column("raw_sealed", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    with op.batch_alter_table("quarantine") as q:
        q.drop_column("raw_sealed")
    op.drop_index("uq_batches_live_sha256", table_name="batches")
    with _quarantine_parked(sqlite):
        with op.batch_alter_table("batches", recreate="always" if sqlite else "auto") as b:
            b.drop_column("withdrawn_reason")
            b.drop_column("withdrawn_at")
            b.drop_column("dup_path")
            b.create_unique_constraint("uq_batches_file_sha256", ["file_sha256"])


@contextmanager
def _quarantine_parked(sqlite: bool) -> Iterator[None]:
    """SQLite rebuilds ``batches`` (its unique constraint cannot be dropped in place), and
    dropping a table that quarantine rows refer to fails their foreign keys (which cannot be
    switched off inside the migration's transaction). So the rows wait in a side table while
    the table is rebuilt with the same ids, then come back, their references checked again.
    """
    if not sqlite:
        yield
        return
    op.execute("CREATE TEMP TABLE quarantine_parked AS SELECT * FROM quarantine")
    op.execute("DELETE FROM quarantine")
    yield
    op.execute("INSERT INTO quarantine SELECT * FROM quarantine_parked")
    op.execute("DROP TABLE quarantine_parked")
