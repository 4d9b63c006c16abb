"""The database schema of the whole application: every room's revisions, one history.

Each room keeps the alembic revisions of its own tables (``clearing/migrations/versions``:
storage, withdrawal, deny-list clearings; ``settlement/migrations/versions``: the ledger;
``tongka/migrations/versions``: the service) and names its append-only tables. They form one
linear history (0001 to the head), so a database upgraded before the revisions moved to their
rooms is at a revision this schema still knows. Only the application knows every room, so the
schema is put together here and every command, the service and the tests upgrade through it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import Engine

import clearing.migrations
import settlement.migrations
import tongka.migrations
from clearing import db
from clearing.db import Schema, current_revision

if TYPE_CHECKING:
    from alembic.config import Config

__all__ = ["SCHEMA", "alembic_config", "current_revision", "head_revision", "upgrade",
           "upgrade_as_owner"]

_ROOMS = (clearing.migrations, settlement.migrations, tongka.migrations)
SCHEMA = Schema(
    version_dirs=tuple(room.VERSIONS for room in _ROOMS),
    append_only=frozenset(table for room in _ROOMS for table in room.APPEND_ONLY_TABLES),
)


def upgrade(engine: Engine, owner_engine: Engine | None = None) -> None:
    """``clearing.db.upgrade`` with the application's schema: to the head, refusing a newer
    database; with ``owner_engine`` as the owner role, then granting the engine's role."""
    db.upgrade(engine, SCHEMA, owner_engine=owner_engine)


def upgrade_as_owner(engine: Engine, owner_url: str) -> None:
    db.upgrade_as_owner(engine, SCHEMA, owner_url)


def head_revision() -> str:
    return db.head_revision(SCHEMA)


def alembic_config(engine: Engine) -> Config:
    """The alembic configuration of the application's schema (tests step through revisions)."""
    return db.alembic_config(engine, SCHEMA)
