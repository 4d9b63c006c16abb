"""Finance's pages: the calendar of service days, a day (settle or settle again, the job's
progress, the settled positions and payment instructions, the overview with its charts), the
ledger's balances and verification, and month close. Auditors read them; only finance acts.

Every figure comes from a use case: the calendar from ``tongka.calendar``, settling from the
service's job queue (``tongka.jobs``, the same worker as ``POST /v1/days/{day}/settlement``),
the settled positions from the ledger's postings, the overview from the statements.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response

from clearing.db import session_factory
from clearing.errors import TongkaError
from settlement.ledger import (
    Reason,
    Scope,
    account_balances,
    load_runs,
    parse_reason,
    positions_from_balances,
    posted_balances,
)
from settlement.month_close import parse_month
from settlement.parties import Party, party_name
from tongka import jobs
from tongka.access import Role
from tongka.calendar import checked_day, service_days
from tongka.ledger_check import verify
from tongka.months import close
from tongka.web.guard import (
    CentreDep,
    Finance,
    Overseer,
    PageError,
    PageRoute,
    PostedForm,
    form_text,
)
from tongka.web.overview import Overviews
from tongka.web.periods import bounds, month_of, neighbours
from tongka.web.render import PAGE_HEADERS, page

router = APIRouter(route_class=PageRoute, include_in_schema=False)

Month = Annotated[str | None, Query(max_length=16)]
DayPath = Annotated[dt.date, Path()]
RESETTLE_REASONS = [r.value for r in Reason if r is not Reason.INITIAL]
JOBS_SCANNED = 200  # recent jobs looked through for a day's
# The overview document: its own inline style, images inline, nothing else, framed here only.
DOCUMENT_CSP = ("default-src 'none'; img-src data:; style-src 'self' 'unsafe-inline'; "
                "frame-ancestors 'self'; base-uri 'none'; form-action 'none'")


def _name(request: Request, party: Party) -> str:
    return party_name(party, request.app.state.centre.tariffs.registry)


# --------------------------------------------------------------------------- the calendar


@router.get("/finance")
def calendar(request: Request, session: Overseer, centre: CentreDep, month: Month = None
             ) -> Response:
    first = month_of(centre.engine, month)
    start, end = bounds(first)
    days = service_days(centre.engine, centre.home, first=start, last=end)
    before, after = neighbours(first)
    return page(request, "calendar.html.j2", title=f"Calendar {first:%Y-%m}", month=first,
                days=days, before=before, after=after,
                jobs=jobs.recent(centre.engine, limit=10),
                to_settle=sum(d.needs_settlement for d in days),
                can_settle=session.principal.role is Role.FINANCE)


# --------------------------------------------------------------------------- a day


@router.get("/finance/days/{day}")
def day_page(request: Request, day: DayPath, session: Overseer, centre: CentreDep) -> Response:
    checked_day(day)
    state = service_days(centre.engine, centre.home, first=day, last=day)[0]
    mine = [j for j in jobs.recent(centre.engine, limit=JOBS_SCANNED) if j.day == day]
    active = next((j for j in mine if j.state in jobs.ACTIVE), None)
    with session_factory(centre.engine)() as s:
        positions = positions_from_balances(posted_balances(s, day, Scope.DAY))
        runs = load_runs(s, Scope.DAY, day)
    return page(
        request, "day.html.j2", title=f"Service day {day}", day=day, state=state,
        active=active, day_jobs=mine[:10], reasons=RESETTLE_REASONS,
        can_settle=session.principal.role is Role.FINANCE,
        positions=[(p, _name(request, p), fen) for p, fen in positions.items()],
        positions_sum=sum(positions.values()), runs=runs, name_of=lambda p: _name(request, p),
        cleared=state.cleared_revision is not None,
    )


@router.post("/finance/days/{day}/settlement")
def settle(request: Request, day: DayPath, session: Finance, form: PostedForm,
           centre: CentreDep) -> Response:
    """Queue the day's settlement for the server's worker, then show the day (its page follows
    the job until it is done)."""
    checked_day(day)
    reason = form_text(form, "reason")
    if reason:
        parse_reason(reason)  # an unknown one is refused here, not by the job later
    try:
        job = jobs.submit(centre.engine, day, reason=reason, key_id=session.principal.key_id)
        session.notify(f"Settlement job {job.id} for {day} started.")
    except jobs.JobRunning as exc:
        session.notify(f"Settlement job {exc.job_id} for {day} is already running.", "error")
    # woken once the response is sent, as the API does: the request's audit row is committed
    # before the job's first write
    return RedirectResponse(f"/finance/days/{day}", status_code=303,
                            background=BackgroundTask(request.app.state.worker.wake))


@router.get("/finance/days/{day}/overview")
async def overview_document(request: Request, day: DayPath, session: Overseer,
                            centre: CentreDep) -> Response:
    """The overview as its own document (framed by the day's page)."""
    checked_day(day)
    overviews: Overviews = request.app.state.web_overviews
    doc = await run_in_threadpool(overviews.document, centre, day)
    return Response(doc, media_type="text/html; charset=utf-8",
                    headers={**PAGE_HEADERS, "Content-Security-Policy": DOCUMENT_CSP})


# --------------------------------------------------------------------------- the ledger


@router.get("/finance/ledger")
def ledger(request: Request, session: Overseer, centre: CentreDep) -> Response:
    return _ledger(request, centre, problems=None)


@router.post("/finance/ledger/verify")
def verify_ledger(request: Request, session: Overseer, form: PostedForm, centre: CentreDep
                  ) -> Response:
    """Recompute every settled day and closed month and compare (changes nothing: auditors
    may run it too)."""
    return _ledger(request, centre, problems=verify(centre.engine, centre.home, centre.tariffs))


def _ledger(request: Request, centre: CentreDep, problems: list[str] | None) -> Response:
    balances = account_balances(centre.engine)
    positions = positions_from_balances(balances)
    return page(
        request, "ledger.html.j2", title="Ledger",
        accounts=[(k, _name(request, k.party), fen)
                  for k, fen in sorted(balances.items(), key=lambda kv: kv[0].code)],
        balance_sum=sum(balances.values()),
        positions=[(p, _name(request, p), fen) for p, fen in positions.items()],
        positions_sum=sum(positions.values()), problems=problems,
    )


# --------------------------------------------------------------------------- month close


@router.get("/finance/months")
def months(request: Request, session: Finance, centre: CentreDep, month: Month = None
           ) -> Response:
    first = month_of(centre.engine, month)
    start, end = bounds(first)
    open_days = [d for d in service_days(centre.engine, centre.home, first=start, last=end)
                 if d.needs_settlement]
    with session_factory(centre.engine)() as s:
        runs = load_runs(s, Scope.MONTH, first)
    return page(request, "months.html.j2", title=f"Month close {first:%Y-%m}", month=first,
                open_days=open_days, runs=runs, reasons=[r.value for r in Reason],
                closed=None, name_of=lambda p: _name(request, p))


@router.post("/finance/months/close")
def close_month(request: Request, session: Finance, form: PostedForm, centre: CentreDep
                ) -> Response:
    try:
        first = parse_month(form_text(form, "month"))
    except (ValueError, OverflowError):
        raise PageError(400, "MONTH_INVALID", "Give the month as YYYY-MM.") from None
    checked_day(first, "month")
    reason = parse_reason(form_text(form, "reason", Reason.INITIAL.value)).value
    try:
        closed = close(centre.engine, centre.home, first, centre.tariffs, reason=reason)
    except TongkaError as exc:
        session.notify(f"{first:%Y-%m} was not closed: {exc.args[0]} [{exc.code}]", "error")
        return RedirectResponse(f"/finance/months?month={first:%Y-%m}", status_code=303)
    result = closed.result
    if result.entry_id is None:
        session.notify(f"{first:%Y-%m} closed again: nothing changed since the last close.")
    else:
        session.notify(f"{first:%Y-%m} closed: run {result.run}, ledger entry {result.entry_id}, "
                       f"{len(result.rebates):,} rebates.")
    return RedirectResponse(f"/finance/months?month={first:%Y-%m}", status_code=303)


# --------------------------------------------------------------------------- parties


@router.get("/finance/parties")
def parties(request: Request, session: Overseer, centre: CentreDep) -> Response:
    registry = centre.tariffs.registry
    return page(request, "parties.html.j2", title="Parties",
                operators=sorted((c, o.name) for c, o in registry.operators.items()),
                issuers=sorted((c, i.name) for c, i in registry.issuers.items()))

