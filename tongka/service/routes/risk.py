"""The deny list over HTTP (SPEC §10): a day's list, and issuers' clearings of their cards.

Finance and auditors read every issuer's cards; an issuer key reads and clears its own only:
another issuer's card is answered exactly as a card on no list (404), so a key never learns
whether another issuer's card is listed. Operators have no part in the deny list (403).
The same use cases as ``tongka denylist show`` and ``tongka denylist clear``.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from clearing.errors import ErrorCode, InputError
from clearing.risk_clearances import MAX_REASON, TOKEN_MAX
from clearing.risk_store import DenyEntry, denylist_text
from tongka.access import Principal, Role
from tongka.denylist import MAX_CARDS, clear_cards, show_denylist
from tongka.service.deps import CentreDep, role_in
from tongka.service.negotiation import negotiate
from tongka.service.problems import PROBLEM_SCHEMA, ApiError, not_found

router = APIRouter(tags=["deny list"])

Reader = Annotated[
    Principal,
    Depends(role_in(Role.ISSUER, Role.FINANCE, Role.AUDITOR, what="read the deny list")),
]
Clearer = Annotated[
    Principal, Depends(role_in(Role.ISSUER, Role.FINANCE, what="clear cards from the deny list")),
]
Day = Annotated[dt.date, Path(description="Service day, YYYY-MM-DD.")]
Token = Annotated[int, Field(ge=0, le=TOKEN_MAX)]
JSON, CSV = "application/json", "text/csv"
TYPES = (JSON, CSV)  # in the server's order of preference


def _problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {s: PROBLEM_SCHEMA for s in statuses}


class DenyEntryOut(BaseModel):
    model_config = ConfigDict(frozen=True)

    issuer: int
    card_id: str = Field(description="The card token, as decimal text (a uint64 does not fit "
                         "a JSON number safely).")
    kinds: list[str] = Field(description="CARD_SEQ_REPLAY, CARD_SEQ_BACKWARDS, BALANCE_BREAK.")
    first_signal: dt.date
    last_signal: dt.date

    @classmethod
    def of(cls, e: DenyEntry) -> DenyEntryOut:
        return cls(issuer=e.issuer, card_id=str(e.card_id), kinds=list(e.kinds),
                   first_signal=e.first_signal, last_signal=e.last_signal)


class DenyListOut(BaseModel):
    model_config = ConfigDict(frozen=True)

    day: dt.date
    cards: list[DenyEntryOut]


def _own_issuer(principal: Principal, asked: int | None) -> int | None:
    """The issuer whose cards a request may see or clear; None: every issuer's (finance and
    auditors, no issuer asked). Another issuer asked by an issuer key: 404."""
    if principal.role is not Role.ISSUER:
        return asked
    if asked is not None and asked != principal.party:
        raise not_found("deny list")
    return principal.party


@router.get(
    "/v1/days/{day}/denylist",
    summary="A day's deny list, as JSON or CSV (by Accept)",
    response_model=DenyListOut,
    responses={
        200: {"content": {CSV: {"schema": {"type": "string"}}},
              "description": "JSON, or the CSV readers download (denylist/D.csv); an issuer "
                             "key gets its own cards only."},
        **_problems(400, 403, 404, 406, 409),
    },
)
def denylist(
    day: Day,
    request: Request,
    centre: CentreDep,
    principal: Reader,
    issuer: Annotated[int | None, Query(ge=0, le=65535,
                                        description="Only this issuer's cards.")] = None,
) -> Response:
    """Every card with a deny-list signal in [D-29, D], less what its issuer cleared (SPEC
    §10); 409 DAY_NOT_CLEARED for a day that has none."""
    media = negotiate(request.headers.get("accept"), TYPES)
    if media is None:
        raise ApiError(406, ErrorCode.NOT_ACCEPTABLE,
                       f"a deny list is {', '.join(TYPES)}; Accept allows none")
    entries = show_denylist(centre.home, day, _own_issuer(principal, issuer))
    headers = {"Vary": "Accept"}
    if media == JSON:
        body = DenyListOut(day=day, cards=[DenyEntryOut.of(e) for e in entries])
        return Response(body.model_dump_json().encode(), media_type=JSON, headers=headers)
    headers["Content-Disposition"] = f'inline; filename="denylist-{day.isoformat()}.csv"'
    return Response(denylist_text(entries).encode("utf-8"), media_type="text/csv; charset=utf-8",
                    headers=headers)


class ClearingIn(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    issuer: int | None = Field(default=None, ge=0, le=65535, description="The cards' issuer: "
                               "finance names it; an issuer key may leave it out (its own).")
    cards: list[Token] = Field(min_length=1, max_length=MAX_CARDS,
                               description="Card tokens as the deny list shows them (numbers "
                               "or decimal text).")
    through: dt.date = Field(description="Clear the cards' signals of days up to this one; "
                             "not after the current service day.")
    reason: str = Field(min_length=1, max_length=MAX_REASON, description="Why; kept with the "
                        "clearing for good.")


class ClearanceOut(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: int
    card_id: str
    through: dt.date
    reason: str
    cleared_by: str
    created_at: dt.datetime


class ClearingOut(BaseModel):
    model_config = ConfigDict(frozen=True)

    issuer: int
    through: dt.date
    recorded: list[ClearanceOut] = Field(description="Clearings recorded by this request.")
    already_cleared: list[str] = Field(description="Cards whose latest clearing already "
                                       "reaches this day: nothing recorded again.")
    denylists_rewritten: list[dt.date] = Field(description="Days whose deny list changed.")


@router.post(
    "/v1/denylist/clearings",
    status_code=201,
    summary="Clear an issuer's cards from the deny list (SPEC §10)",
    responses={200: {"model": ClearingOut, "description": "Every card was already cleared "
                     "through this day: nothing recorded (the lists are rewritten all the same)."},
               **_problems(400, 403, 404, 409, 422)},
)
def clear(body: ClearingIn, request: Request, response: Response, centre: CentreDep,
          principal: Clearer) -> ClearingOut:
    """Record the clearings (append-only), then rewrite the deny lists of days ``through`` to
    ``through`` + 29 that change. 404 DENYLIST_CARD_NOT_LISTED when a card is on none of the
    issuer's lists up to ``through`` + 29 (another issuer's card reads the same): nothing is
    cleared."""
    issuer = _own_issuer(principal, body.issuer)
    if issuer is None:
        raise InputError("name the cards' issuer: body field issuer",
                         code=ErrorCode.DENYLIST_ISSUER_UNKNOWN)
    result = clear_cards(centre.engine, centre.home, issuer, body.cards, body.through,
                         body.reason, f"{principal.name} key {principal.key_id}",
                         registry=centre.tariffs.registry)
    if not result.recorded:
        response.status_code = 200
    ids = ",".join(str(c.id) for c in result.recorded)
    # the request's audit event (tongka.service.app) carries what it did
    request.state.audit_detail = (f"ISS-{issuer} through {result.through}: "
                                  f"{len(result.recorded)} recorded [{ids}], "
                                  f"{len(result.already)} already")
    return ClearingOut(
        issuer=issuer, through=result.through,
        recorded=[ClearanceOut(id=c.id, card_id=str(c.card_id), through=c.through,
                               reason=c.reason, cleared_by=c.cleared_by, created_at=c.created_at)
                  for c in result.recorded],
        already_cleared=[str(c) for c in result.already],
        denylists_rewritten=list(result.rewritten),
    )
