"""Alembic environment: runs migrations on the engine handed in by ``clearing.db.upgrade``."""

from __future__ import annotations

from alembic import context

from clearing.db import make_engine

config = context.config
engine = config.attributes.get("engine")
if engine is None:
    engine = make_engine(config.get_main_option("sqlalchemy.url"))

with engine.connect() as connection:
    context.configure(connection=connection, render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
