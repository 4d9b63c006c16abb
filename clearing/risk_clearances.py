"""Issuers' clearings of their cards from the deny list (SPEC §10), kept as append-only evidence.

A clearing of a card through day C takes the card's deny-list signals of days up to C off the
deny lists of days C and after; signals after C list it again (``clearing.risk_store``). For
the deny list of day D, the clearing that decides is the card's latest one (in the order they
were recorded) among those through a day on or before D: a mistaken clearing is superseded by
recording another, never changed or deleted (migration 0006's triggers refuse both). Deny lists
of days before C stay as they were published.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Date,
    DateTime,
    Index,
    Integer,
    String,
    Text,
    select,
)
from sqlalchemy.orm import Mapped, Session, mapped_column

from clearing.db import Base

ID = BigInteger().with_variant(Integer(), "sqlite")  # SQLite autoincrements INTEGER keys only
TOKEN_MAX = 2**64 - 1  # SPEC §3: card_id is a uint64 token
MAX_REASON = 2000  # characters, as a batch withdrawal's reason
MAX_ACTOR = 200

CardKey = tuple[int, int]  # (issuer, card token), as the deny list names a card


class RiskClearance(Base):
    __tablename__ = "risk_clearances"
    __table_args__ = (
        Index("ix_risk_clearances_issuer", "issuer", "card_token"),
        CheckConstraint("length(reason) > 0", name="reason"),
        CheckConstraint("length(cleared_by) > 0", name="cleared_by"),
    )

    id: Mapped[int] = mapped_column(ID, primary_key=True, autoincrement=True)
    issuer: Mapped[int] = mapped_column(Integer)
    # decimal text: a uint64 token does not fit either database's signed 64-bit integer
    card_token: Mapped[str] = mapped_column(String(20))
    cleared_through: Mapped[dt.date] = mapped_column(Date)
    reason: Mapped[str] = mapped_column(Text)
    cleared_by: Mapped[str] = mapped_column(String(MAX_ACTOR))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


@dataclass(frozen=True, slots=True)
class Clearance:
    """One recorded clearing: the issuer's card, cleared through a day, why and by whom."""

    id: int  # the record order: a later clearing of the same card supersedes an earlier one
    issuer: int
    card_id: int  # the card token, as the deny list shows it
    through: dt.date
    reason: str
    cleared_by: str  # the principal (``issuer:1``, ``finance``, with the key id) or actor
    created_at: dt.datetime

    @property
    def card(self) -> CardKey:
        return (self.issuer, self.card_id)


def _value(row: RiskClearance) -> Clearance:
    created = row.created_at
    if created.tzinfo is None:  # SQLite gives stored UTC times back without their zone
        created = created.replace(tzinfo=dt.UTC)
    return Clearance(row.id, row.issuer, int(row.card_token), row.cleared_through, row.reason,
                     row.cleared_by, created)


def clear_card(session: Session, issuer: int, token: int, through: dt.date, reason: str,
               actor: str) -> Clearance:
    """Record that ``issuer`` cleared card ``token`` through ``through`` (in the caller's
    transaction). The caller has checked the issuer and that the card is listed; the database
    refuses an empty reason or actor."""
    if not 0 <= token <= TOKEN_MAX:
        raise ValueError(f"card token {token} is not a uint64")
    row = RiskClearance(issuer=issuer, card_token=str(token), cleared_through=through,
                        reason=reason, cleared_by=actor[:MAX_ACTOR],
                        created_at=dt.datetime.now(dt.UTC))
    session.add(row)
    session.flush()  # the id: the clearing's place in the record order
    return _value(row)


def clearances(session: Session, *, issuer: int | None = None,
               cards: Iterable[int] | None = None, through_by: dt.date | None = None
               ) -> list[Clearance]:
    """Recorded clearings in record order: of one issuer, of some of its cards, and through a
    day on or before ``through_by`` (those that can apply to that day's deny list)."""
    query = select(RiskClearance).order_by(RiskClearance.id)
    if issuer is not None:
        query = query.where(RiskClearance.issuer == issuer)
    if cards is not None:
        query = query.where(RiskClearance.card_token.in_([str(c) for c in cards]))
    if through_by is not None:
        query = query.where(RiskClearance.cleared_through <= through_by)
    return [_value(r) for r in session.scalars(query)]


def cleared_through(found: Iterable[Clearance], day: dt.date) -> dict[CardKey, dt.date]:
    """Which clearing applies to day ``day``'s deny list, per card: the day its latest clearing
    through a day on or before ``day`` reaches (signals of days up to it do not list the card).
    A card without one is absent."""
    latest: dict[CardKey, Clearance] = {}
    for c in found:
        if c.through <= day and (c.card not in latest or c.id > latest[c.card].id):
            latest[c.card] = c
    return {card: c.through for card, c in latest.items()}


def applying(session: Session, day: dt.date) -> dict[CardKey, dt.date]:
    """The clearings that apply to day ``day``'s deny list (``cleared_through``), read."""
    return cleared_through(clearances(session, through_by=day), day)


def is_cleared(cleared: Mapping[CardKey, dt.date], card: CardKey, signal_day: dt.date) -> bool:
    """SPEC §10: a clearing through C removes the card's signals of days up to C."""
    through = cleared.get(card)
    return through is not None and signal_day <= through
