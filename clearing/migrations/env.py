"""Alembic environment: runs migrations on the engine handed in by ``clearing.db.upgrade``."""

from __future__ import annotations

from alembic import context

from clearing.db import make_engine

config = context.config
engine = config.attributes.get("engine")
if engine is None:
    engine = make_engine(config.get_main_option("sqlalchemy.url"))

# Two processes upgrading one PostgreSQL database at once (two CLI commands on a fresh
# database) must not both create the tables: the second waits here, then finds the schema at
# head and does nothing. The lock is transaction-scoped, so it ends with the migration.
_PG_MIGRATION_LOCK = 7_000

with engine.connect() as connection:
    context.configure(connection=connection, render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_MIGRATION_LOCK})")
        context.run_migrations()
    connection.commit()
