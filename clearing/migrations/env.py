"""Alembic environment: runs every room's revisions (``clearing.db.Schema``) on the engine
``clearing.db.upgrade`` hands in."""

from __future__ import annotations

from alembic import context

from clearing.db import SQLITE_IMMEDIATE, make_engine

config = context.config
engine = config.attributes.get("engine")
if engine is None:
    engine = make_engine(config.get_main_option("sqlalchemy.url") or "")

# Two processes upgrading one database at once (two CLI commands on a fresh database) must
# not both create the tables: the second waits here, then finds the schema at head and does
# nothing. PostgreSQL: a transaction-scoped advisory lock. SQLite: the database write lock,
# taken before alembic reads the version (a reader that writes later would fail instead).
_PG_MIGRATION_LOCK = 7_000
_SQLITE_VERSION_TABLE = (
    "CREATE TABLE IF NOT EXISTS alembic_version (version_num VARCHAR(32) NOT NULL, "
    "CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num))"
)

with engine.connect().execution_options(**{SQLITE_IMMEDIATE: True}) as connection:
    # Both backends have transactional DDL (alembic assumes not for SQLite and would commit
    # after each revision): all pending revisions are applied in one transaction, or none.
    context.configure(connection=connection, render_as_batch=connection.dialect.name == "sqlite",
                      transactional_ddl=True)
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            # per schema: migrations of other schemas in the same database need not wait
            connection.exec_driver_sql(
                "SELECT pg_advisory_xact_lock(hashtextextended("
                f"coalesce(current_schema(), '') || ':migrate:{_PG_MIGRATION_LOCK}', 0))"
            )
        elif connection.dialect.name == "sqlite":
            # BEGIN IMMEDIATE (SQLITE_IMMEDIATE above) already holds the write lock.
            connection.exec_driver_sql(_SQLITE_VERSION_TABLE)
        context.run_migrations()
    connection.commit()
