"""Issuers clear their cards from the deny list (SPEC §10): the use case behind ``tongka denylist
clear`` and ``POST /v1/denylist/clearings``, and the published lists behind ``denylist show``.

A clearing is recorded first (one transaction, append-only rows: ``clearing.risk_clearances``),
then the stored deny lists it changes are rewritten from the signals and every recorded
clearing. The files are a function of what is stored, so running the same clearing again
writes the same files: a crash between the commit and the files is repaired by repeating it.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine

from clearing.db import transaction
from clearing.errors import ErrorCode, InputError, StateError
from clearing.risk_clearances import (
    MAX_REASON,
    TOKEN_MAX,
    Clearance,
    clear_card,
    clearances,
)
from clearing.risk_store import (
    DENY_WINDOW_DAYS,
    DenyEntry,
    listed_cards,
    read_denylist,
    refresh_denylists,
)
from clearing.service_day import service_day_of
from tariffs.registry import Registry, load_registry
from tongka.calendar import checked_day

MAX_CARDS = 1000  # cards in one clearing request


@dataclass(frozen=True, slots=True)
class ClearingResult:
    """What one clearing request did."""

    issuer: int
    through: dt.date
    recorded: tuple[Clearance, ...]  # clearings written now
    # cards whose latest clearing already reaches exactly this day: nothing new to record
    already: tuple[int, ...]
    rewritten: tuple[dt.date, ...]  # deny list days whose file changed

    @property
    def cards(self) -> tuple[int, ...]:
        return tuple(c.card_id for c in self.recorded) + self.already


def clear_cards(engine: Engine, home: Path, issuer: int, tokens: Iterable[int],
                through: dt.date, reason: str, actor: str, *,
                registry: Registry | None = None, today: dt.date | None = None
                ) -> ClearingResult:
    """Clear ``issuer``'s cards ``tokens`` from the deny lists through day ``through``.

    Refused, with nothing written: an empty or overlong reason (``DENYLIST_REASON``), an issuer
    the registry does not know (``DENYLIST_ISSUER_UNKNOWN``), no card, too many, or a token that
    is no uint64 (``DENYLIST_CARDS_INVALID``), a day after the current service day
    (``DENYLIST_THROUGH_FUTURE``), a card that is on none of the issuer's deny lists of days
    up to ``through`` + 29 (``DENYLIST_CARD_NOT_LISTED``: another issuer's card included).

    A card whose latest clearing already reaches ``through`` is not recorded again. ``actor``
    names who asked (``finance key k1``, ``cli:alice``); it is stored with each clearing.
    """
    reason = reason.strip()
    if not reason or len(reason) > MAX_REASON:
        raise InputError(f"a clearing needs a reason of 1 to {MAX_REASON:,} characters",
                         code=ErrorCode.DENYLIST_REASON)
    if not actor.strip():
        raise ValueError("a clearing names its actor")
    registry = registry if registry is not None else load_registry()
    if issuer not in registry.issuers:
        raise InputError(f"issuer {issuer} is no issuer of the registry",
                         code=ErrorCode.DENYLIST_ISSUER_UNKNOWN)
    cards = _cards(tokens)
    checked_day(through, "--through")
    today = today if today is not None else service_day_of(int(time.time() * 1000))
    if through > today:
        raise InputError(f"--through {through} is after the current service day {today}: a "
                         "clearing reaches only signals already raised",
                         code=ErrorCode.DENYLIST_THROUGH_FUTURE)
    last = through + dt.timedelta(days=DENY_WINDOW_DAYS - 1)
    missing = sorted(set(cards) - listed_cards(home, issuer, set(cards), last))
    if missing:
        shown = ", ".join(str(c) for c in missing[:10]) + (" ..." if len(missing) > 10 else "")
        raise StateError(f"{len(missing)} card(s) of issuer {issuer} are on none of its deny "
                         f"lists up to {last}: {shown}; nothing was cleared",
                         code=ErrorCode.DENYLIST_CARD_NOT_LISTED)

    recorded: list[Clearance] = []
    already: list[int] = []
    reach = through  # the latest day an earlier clearing of these cards reached
    with transaction(engine, immediate=True) as session:
        latest: dict[int, Clearance] = {}
        for c in clearances(session, issuer=issuer, cards=cards):
            latest[c.card_id] = c  # record order: the last one stays
            reach = max(reach, c.through)
        for card in cards:
            if card in latest and latest[card].through == through:
                already.append(card)
            else:
                recorded.append(clear_card(session, issuer, card, through, reason, actor))
    # After the commit: the files follow the rows, and follow them again on a repeat. A
    # clearing through C decides the lists of days C and after; the lists it changes end 29
    # days after C, or after the day an earlier clearing it supersedes reached, if later.
    rewritten = refresh_denylists(home, through, reach + dt.timedelta(days=DENY_WINDOW_DAYS - 1),
                                  engine)
    return ClearingResult(issuer, through, tuple(recorded), tuple(already), tuple(rewritten))


def _cards(tokens: Iterable[int]) -> list[int]:
    """The tokens, each once, in the order given; DENYLIST_CARDS_INVALID unless 1 to
    MAX_CARDS uint64 values."""
    cards: list[int] = []
    seen: set[int] = set()
    for token in tokens:
        if isinstance(token, bool) or not isinstance(token, int) or not 0 <= token <= TOKEN_MAX:
            raise InputError(f"card token {token!r} is not a whole number from 0 to 2^64-1",
                             code=ErrorCode.DENYLIST_CARDS_INVALID)
        if token not in seen:
            seen.add(token)
            cards.append(token)
    if not 1 <= len(cards) <= MAX_CARDS:
        raise InputError(f"give 1 to {MAX_CARDS:,} cards to clear, not {len(cards):,}",
                         code=ErrorCode.DENYLIST_CARDS_INVALID)
    return cards


def show_denylist(home: Path, day: dt.date, issuer: int | None = None) -> list[DenyEntry]:
    """Day ``day``'s deny list as published (``denylist/D.csv``), of one issuer or all;
    ``DAY_NOT_CLEARED`` when the day has none (it was never cleared)."""
    entries = read_denylist(home, checked_day(day))
    if entries is None:
        raise StateError(f"no deny list for {day}: the day was never cleared (`tongka clear "
                         f"--date {day}`)", code=ErrorCode.DAY_NOT_CLEARED)
    return [e for e in entries if issuer is None or e.issuer == issuer]


def list_clearances(engine: Engine, issuer: int | None = None,
                    cards: Iterable[int] | None = None) -> list[Clearance]:
    """The recorded clearings, in record order, of one issuer (and some cards) or all."""
    with transaction(engine) as session:
        return clearances(session, issuer=issuer, cards=None if cards is None else list(cards))
