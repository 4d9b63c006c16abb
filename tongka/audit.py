"""The audit trail: every request that changes something, and every refused one.

Append-only like the ledger (migration 0005's triggers, and the engine role's grants): an event
once written is never updated or deleted. No event holds a key, only the key's public id.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import BigInteger, DateTime, Engine, Integer, String, select
from sqlalchemy.orm import Mapped, mapped_column

from clearing.db import Base, transaction

ID = BigInteger().with_variant(Integer(), "sqlite")  # SQLite autoincrements INTEGER keys only


class AuditEvent(Base):
    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(ID, primary_key=True, autoincrement=True)
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    key_id: Mapped[str | None] = mapped_column(String(24), nullable=True)
    role: Mapped[str | None] = mapped_column(String(24), nullable=True)
    action: Mapped[str] = mapped_column(String(120))
    resource: Mapped[str] = mapped_column(String(300), default="")
    outcome: Mapped[int] = mapped_column(Integer)
    detail: Mapped[str] = mapped_column(String(300), default="")


@dataclass(frozen=True, slots=True)
class Event:
    at: dt.datetime
    key_id: str | None
    role: str | None
    action: str
    resource: str
    outcome: int
    detail: str


def record(engine: Engine, *, key_id: str | None, role: str | None, action: str,
           resource: str, outcome: int, detail: str = "") -> None:
    """Append one event (its own transaction: a refused request has nothing else to commit)."""
    with transaction(engine) as s:
        s.add(AuditEvent(at=dt.datetime.now(dt.UTC), key_id=key_id, role=role,
                         action=action[:120], resource=resource[:300], outcome=outcome,
                         detail=detail[:300]))


def events(engine: Engine, *, limit: int = 1000) -> list[Event]:
    """The latest events, newest first."""
    with transaction(engine) as s:
        rows = s.scalars(select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit))
        return [Event(r.at, r.key_id, r.role, r.action, r.resource, r.outcome, r.detail)
                for r in rows]
