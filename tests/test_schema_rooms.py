"""The schema's revisions live with the rooms that own their tables, as one linear history.

ARCHITECTURE: settlement's storage (the ledger tables and their migrations) belongs to
settlement, the service's to the application. A revision filed in the wrong room, a table no
revision creates, or a second head (two rooms' revisions forking the history) fails here.
"""

from __future__ import annotations

import re
from pathlib import Path

from alembic.script import ScriptDirectory

# every module that maps a table, so the registry below knows them all
import clearing.batches  # noqa: F401, I001
import clearing.days  # noqa: F401
import clearing.migrations
import clearing.risk_clearances  # noqa: F401
import settlement.ledger  # noqa: F401
import settlement.migrations
import tongka.access  # noqa: F401
import tongka.audit  # noqa: F401
import tongka.jobs  # noqa: F401
import tongka.migrations
from clearing.db import Base, alembic_config
from tongka.schema import SCHEMA

ROOMS = {"clearing": clearing.migrations, "settlement": settlement.migrations,
         "tongka": tongka.migrations}
CREATE = re.compile(r"op\.create_table\(\s*\"([a-z_]+)\"")


def _owner_of_each_table() -> dict[str, str]:
    return {m.local_table.name: m.class_.__module__.split(".")[0]
            for m in Base.registry.mappers}


def _created(versions: Path) -> dict[str, list[str]]:
    return {f.name: CREATE.findall(f.read_text(encoding="utf-8"))
            for f in sorted(versions.glob("*.py"))}


def test_each_revision_creates_only_its_own_rooms_tables() -> None:
    owner = _owner_of_each_table()
    created: set[str] = set()
    for room, package in ROOMS.items():
        for name, tables in _created(package.VERSIONS).items():
            for table in tables:
                assert owner.get(table) == room, f"{name} in {room}: {table}"
                created.add(table)
    assert created == set(owner), f"tables no revision creates: {set(owner) - created}"


def test_the_rooms_revisions_are_one_linear_history() -> None:
    script = ScriptDirectory.from_config(alembic_config(None, SCHEMA))
    files = [f for package in ROOMS.values() for f in package.VERSIONS.glob("*.py")]
    revisions = list(script.walk_revisions())
    assert script.get_heads() == [revisions[0].revision]
    assert len(revisions) == len(files)
    assert revisions[-1].down_revision is None
    for newer, older in zip(revisions, revisions[1:], strict=False):
        assert newer.down_revision == older.revision


def test_append_only_tables_are_declared_by_their_own_room() -> None:
    owner = _owner_of_each_table()
    for room, package in ROOMS.items():
        for table in package.APPEND_ONLY_TABLES:
            assert owner[table] == room
    assert SCHEMA.append_only == {t for p in ROOMS.values() for t in p.APPEND_ONLY_TABLES}
    assert {"postings", "audit_events", "risk_clearances"} <= SCHEMA.append_only
