"""Database plumbing: the declarative base, engines for SQLite and PostgreSQL, sessions, and the
machinery that migrates a schema and grants the engine's role.

Every SQL table of the project (batches, quarantine, ledger) hangs off ``Base``; the schema is
created and upgraded only through alembic revisions, which live with the room owning their
tables. Which rooms make up the schema is the application's knowledge (``tongka.schema``
hands a ``Schema`` to ``upgrade``); this module knows none of the rooms above it.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, Engine, MetaData, create_engine, event, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry

from clearing.errors import TongkaError
from tariffs.error_codes import ErrorCode

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

from clearing.migrations import ENVIRONMENT

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class DatabaseError(TongkaError):
    """Infrastructure failure talking to the database; ``code`` is stable for operators."""

    code = ErrorCode.DB_ERROR

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message, code=code)


SQLITE_BUSY_TIMEOUT_MS = 60_000  # concurrent commands wait for each other this long, then fail
SQLITE_IMMEDIATE = "tongka_sqlite_immediate"  # execution option: BEGIN IMMEDIATE on SQLite


def _retry_locked(fn: Callable[[], object], attempts: int = 50, pause_s: float = 0.1) -> None:
    """Run ``fn``, retrying while SQLite reports the file locked.

    Switching a fresh file to WAL needs an exclusive lock and SQLite does not always wait on
    the busy handler for it: several commands starting at once on a new database would fail
    with "database is locked" instead of waiting their turn.
    """
    for attempt in range(attempts):
        try:
            fn()
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == attempts - 1:
                raise
            time.sleep(pause_s)


def make_engine(url: str) -> Engine:
    """An engine with the settings each backend needs for correct, concurrent use."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: sqlite3.Connection, _record: ConnectionPoolEntry) -> None:
            # Let SQLAlchemy's BEGIN be the real transaction start, so BEGIN IMMEDIATE works.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cur.execute("PRAGMA foreign_keys=ON")
            _retry_locked(lambda: cur.execute("PRAGMA journal_mode=WAL"))
            cur.execute("PRAGMA synchronous=FULL")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Connection) -> None:
            # A writer that starts as a reader cannot wait for the write lock under WAL (SQLite
            # answers SQLITE_BUSY at once if another writer committed since it read), so
            # transactions that will write ask for the lock up front and wait for it.
            immediate = conn.get_execution_options().get(SQLITE_IMMEDIATE, False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

        return engine
    return create_engine(url, pool_pre_ping=True)


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(engine: Engine, *, immediate: bool = False) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on any error.

    ``immediate``: the unit reads then writes (claim a job, refuse a second one), so on SQLite it
    takes the write lock up front (BEGIN IMMEDIATE) instead of failing when another writer
    committed between its read and its write.
    """
    if not immediate:
        with session_factory(engine)() as session, session.begin():
            yield session
        return
    with (
        engine.connect().execution_options(**{SQLITE_IMMEDIATE: True}) as conn,
        Session(bind=conn, expire_on_commit=False) as session,
        session.begin(),
    ):
        yield session


@dataclass(frozen=True)
class Schema:
    """The schema as the rooms make it up: each keeps its alembic revisions in its own
    directory (one linear history across them) and names the tables the engine's role may
    only read and append to (SPEC v1.2 §8)."""

    version_dirs: tuple[Path, ...]
    append_only: frozenset[str]


def alembic_config(engine: Engine | None, schema: Schema) -> Config:
    """An alembic configuration running ``schema``'s revisions on ``engine`` (None: only to
    read the revisions)."""
    # alembic (+0.14 s, -X importtime) only where migrations run: every command imports this
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", _ini_value(ENVIRONMENT))
    cfg.set_main_option("path_separator", "os")  # os.pathsep: a directory may hold spaces
    cfg.set_main_option("version_locations",
                        os.pathsep.join(_ini_value(d) for d in schema.version_dirs))
    if engine is not None:
        cfg.attributes["engine"] = engine
    return cfg


def _ini_value(path: Path) -> str:
    return str(path).replace("%", "%%")  # alembic's ConfigParser interpolates '%'


def head_revision(schema: Schema) -> str:
    from alembic.script import ScriptDirectory  # alembic (+0.14 s), as in alembic_config

    head = ScriptDirectory.from_config(alembic_config(None, schema)).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext  # alembic (+0.14 s), as above

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


# alembic_version is read only for the engine's role; every table not append-only (a room's
# ``Schema.append_only``) is operational: read, insert, update.
READ_ONLY_TABLES = ("alembic_version",)
_INSUFFICIENT_PRIVILEGE = "42501"  # PostgreSQL SQLSTATE: permission denied, must be owner


def upgrade(engine: Engine, schema: Schema, owner_engine: Engine | None = None) -> None:
    """Bring the schema to the code's head; refuse a database newer than the code.

    Callers pass the application's schema (``tongka.schema.upgrade`` does).

    Without ``owner_engine`` the engine's own role runs the migrations (one role: fine for
    SQLite and for development). With it (PostgreSQL in production), the migrations run as the
    owner role, and the engine's role is then granted exactly what it needs
    (``grant_engine_role``): it can then neither rewrite the ledger nor switch its triggers off.
    """
    from alembic import command  # alembic (+0.14 s), as in alembic_config
    from alembic.script import ScriptDirectory

    runner = owner_engine if owner_engine is not None else engine
    if owner_engine is not None:
        check_engine_role(engine, owner_engine)
    cfg = alembic_config(runner, schema)
    script = ScriptDirectory.from_config(cfg)
    current = current_revision(runner)
    if current is not None and not _known(script, current):
        raise DatabaseError(
            ErrorCode.DB_NEWER_THAN_CODE,
            f"the database is at schema revision {current}, which this version of tongka does "
            "not know: it was written by a newer tongka; upgrade tongka instead",
        )
    try:
        command.upgrade(cfg, "head")
    except DBAPIError as exc:
        if getattr(exc.orig, "sqlstate", None) != _INSUFFICIENT_PRIVILEGE:
            raise
        raise DatabaseError(
            ErrorCode.DB_UPGRADE_NEEDS_OWNER,
            f"the schema is at revision {current} and this role may not change it: run "
            "`tongka db upgrade --owner-url URL` with the schema owner's URL",
        ) from None
    if owner_engine is not None:
        grant_engine_role(owner_engine, role_name(engine), schema)


def upgrade_as_owner(engine: Engine, schema: Schema, owner_url: str) -> None:
    """``tongka db upgrade --owner-url URL``: migrate as the owner, then grant ``engine``'s role."""
    owner = make_engine(owner_url)
    try:
        upgrade(engine, schema, owner_engine=owner)
    finally:
        owner.dispose()


def role_name(engine: Engine) -> str:
    """The database role an engine's connections run as."""
    with engine.connect() as conn:
        return str(conn.exec_driver_sql("SELECT current_user").scalar_one())


def check_engine_role(engine: Engine, owner_engine: Engine) -> None:
    """Refuse an engine role that could undo the guards: a superuser, the owner itself, or a
    member of the owner role (each may ALTER, DISABLE or DROP the ledger's triggers)."""
    if engine.dialect.name != "postgresql" or owner_engine.dialect.name != "postgresql":
        raise DatabaseError(
            ErrorCode.DB_ROLES_NEED_POSTGRESQL,
            "a separate owner role needs PostgreSQL; SQLite runs as one role (no --owner-url)",
        )
    role = role_name(engine)
    with owner_engine.connect() as conn:
        owner, superuser, member = conn.execute(
            text(
                "SELECT current_user, r.rolsuper, pg_has_role(:role, current_user, 'MEMBER') "
                "FROM pg_roles r WHERE r.rolname = :role"
            ),
            {"role": role},
        ).one()
    if superuser or member or role == owner:
        raise DatabaseError(
            ErrorCode.DB_ENGINE_ROLE_PRIVILEGED,
            f"the engine role {role!r} is a superuser, the owner {owner!r} or a member of it: "
            "it could alter, disable or drop the ledger's triggers; use a plain login role",
        )


def grant_engine_role(owner_engine: Engine, role: str, schema: Schema) -> None:
    """Give ``role`` exactly what the engine needs on the owner's tables of the current schema:
    SELECT and INSERT on the append-only ledger tables, SELECT, INSERT and UPDATE on the
    operational ones, SELECT on alembic_version, USAGE on the sequences; nothing else (no
    UPDATE, DELETE, TRUNCATE, REFERENCES or TRIGGER on the ledger). Revokes first, so it can
    run after every upgrade. USAGE on the schema itself is the database admin's grant."""
    with owner_engine.begin() as conn:
        quote = conn.dialect.identifier_preparer.quote
        grantee = quote(role)
        namespace = quote(conn.exec_driver_sql("SELECT current_schema()").scalar_one())
        tables = conn.exec_driver_sql(
            "SELECT tablename FROM pg_tables "
            "WHERE schemaname = current_schema() AND tableowner = current_user ORDER BY tablename"
        ).scalars().all()
        for table in tables:
            name = f"{namespace}.{quote(table)}"
            conn.exec_driver_sql(f"REVOKE ALL ON {name} FROM {grantee}")
            conn.exec_driver_sql(f"GRANT {_privileges(table, schema)} ON {name} TO {grantee}")
        sequences = conn.exec_driver_sql(
            "SELECT sequencename FROM pg_sequences "
            "WHERE schemaname = current_schema() AND sequenceowner = current_user"
        ).scalars().all()
        for sequence in sequences:
            name = f"{namespace}.{quote(sequence)}"
            conn.exec_driver_sql(f"REVOKE ALL ON SEQUENCE {name} FROM {grantee}")
            conn.exec_driver_sql(f"GRANT USAGE ON SEQUENCE {name} TO {grantee}")


def _privileges(table: str, schema: Schema) -> str:
    if table in schema.append_only:
        return "SELECT, INSERT"
    if table in READ_ONLY_TABLES:
        return "SELECT"
    return "SELECT, INSERT, UPDATE"


def _known(script: ScriptDirectory, revision: str) -> bool:
    try:
        return script.get_revision(revision) is not None
    except Exception:
        return False
