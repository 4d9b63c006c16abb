"""Statements of an operator or an issuer: the days it has one, and a day's statement with the
party's payment lines. Finance and auditors read every party's; another party's is 404.

The statement itself is the service's (``GET /v1/days/{day}/statements/{party}``, the same
templates and charts as ``tongka report``), framed in the page; the payment lines are the
party's instructions of the day's settlement runs as stored.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from starlette.responses import Response

from clearing.batches import list_batches
from clearing.db import session_factory
from settlement.ledger import Scope, load_runs
from settlement.parties import Party, issuer, operator, party_name
from tariffs.vocab import PartyRole
from tongka.calendar import checked_day, service_days
from tongka.settling import staleness
from tongka.web.guard import (
    CentreDep,
    PageRoute,
    SignedIn,
    may_see_issuer,
    may_see_operator,
    not_found,
)
from tongka.web.periods import bounds, month_of, neighbours
from tongka.web.render import page

router = APIRouter(route_class=PageRoute, include_in_schema=False)

Code = Annotated[int, Path(ge=0, le=2**31 - 1)]
Month = Annotated[str | None, Query(max_length=16)]


def _party(centre: Any, session: Any, party: Party) -> str:
    """The party's name if the key may see it; 404 otherwise (and for unknown codes)."""
    registry = centre.tariffs.registry
    if party.role == PartyRole.OPERATOR:
        ok = may_see_operator(session.principal, party.code) and party.code in registry.operators
    else:
        ok = may_see_issuer(session.principal, party.code) and party.code in registry.issuers
    if not ok:
        raise not_found()
    return party_name(party, registry)


def _base(party: Party) -> str:
    kind = "operators" if party.role == PartyRole.OPERATOR else "issuers"
    return f"/{kind}/{party.code}"


@router.get("/operators/{op}/statements")
def operator_days(request: Request, op: Code, session: SignedIn, centre: CentreDep,
                  month: Month = None) -> Response:
    return _days(request, session, centre, operator(op), month)


@router.get("/issuers/{iss}")
def issuer_days(request: Request, iss: Code, session: SignedIn, centre: CentreDep,
                month: Month = None) -> Response:
    return _days(request, session, centre, issuer(iss), month)


def _days(request: Request, session: Any, centre: Any, party: Party, month: str | None
          ) -> Response:
    """The month's cleared days (an operator's: those it sent batches for): a statement each."""
    name = _party(centre, session, party)
    first = month_of(centre.engine, month)
    start, end = bounds(first)
    days = [d for d in service_days(centre.engine, centre.home, first=start, last=end)
            if d.cleared_revision is not None]
    if party.role == PartyRole.OPERATOR:
        sent = {b.service_day for b in list_batches(centre.engine)
                if b.operator == party.code and start <= b.service_day <= end}
        days = [d for d in days if d.day in sent]
    before, after = neighbours(first)
    return page(request, "statement_days.html.j2", title=f"Statements · {name}", name=name,
                party=party, base=_base(party), month=first, days=days[::-1], before=before,
                after=after)


@router.get("/operators/{op}/statements/{day}")
def operator_statement(request: Request, op: Code, day: dt.date, session: SignedIn,
                       centre: CentreDep) -> Response:
    return _statement(request, session, centre, operator(op), day)


@router.get("/issuers/{iss}/statements/{day}")
def issuer_statement(request: Request, iss: Code, day: dt.date, session: SignedIn,
                     centre: CentreDep) -> Response:
    return _statement(request, session, centre, issuer(iss), day)


def _statement(request: Request, session: Any, centre: Any, party: Party, day: dt.date
               ) -> Response:
    name = _party(centre, session, party)
    checked_day(day)
    state = service_days(centre.engine, centre.home, first=day, last=day)[0]
    with session_factory(centre.engine)() as s:
        runs = load_runs(s, Scope.DAY, day)
    lines = [(run, i) for run in runs for i in run.instructions if i.party == party]
    return page(
        request, "statement.html.j2", title=f"Statement {day} · {name}", name=name, party=party,
        base=_base(party), day=day, state=state,
        stale=staleness(centre.engine, centre.home, day) if state.cleared_revision else None,
        document=f"/v1/days/{day.isoformat()}/statements/{party.tag}",
        lines=lines, runs=len(runs),
    )
