"""Service days over HTTP: the settlement calendar, settlement jobs, statements, payment lines
and month close. Each route parses, authorises, calls its use case and presents the result.

Parties in paths are written as the statement files and payment files name them
(``settlement.parties.Party.tag``): ``OPR-101`` an operator, ``ISS-1`` an issuer, ``GOV-420100``
a city's government, ``CTR-0`` the clearing centre. An operator or issuer key reads only its
own party; another party's statement is 404 exactly like one that does not exist, so a key
never learns whether someone else has figures that day.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import io
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from pathlib import Path as FilePath
from typing import Annotated, Any, Literal, overload

import pyarrow as pa
from fastapi import APIRouter, BackgroundTasks, Body, Depends, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from clearing.day import read_day_legs
from clearing.db import session_factory
from clearing.errors import ErrorCode, InputError
from clearing.legs_store import REVISION_KEY, legs_revision
from clearing.risk_store import read_day_signals
from clearing.service_day import service_day_of
from settlement.ledger import Reason, Scope, load_runs
from settlement.month_close import parse_month
from settlement.parties import Party, parse_tag, party_name
from settlement.payments import PAYMENT_FIELDS, render_run
from settlement.settle import SettlementResult, settle_day
from settlement.statements import party_obligations, write_statements
from tariffs.vocab import PartyRole
from tongka import jobs
from tongka.access import Principal, Role
from tongka.calendar import FIRST_DAY, LAST_DAY, CalendarDay, DayState, checked_day, service_days
from tongka.months import close
from tongka.service.centre import Centre
from tongka.service.deps import CentreDep, role_in
from tongka.service.negotiation import negotiate
from tongka.service.problems import PROBLEM_SCHEMA, ApiError
from tongka.settling import staleness

router = APIRouter(tags=["days"])

Finance = Annotated[
    Principal, Depends(role_in(Role.FINANCE, what="settle days or close months"))
]
Overseer = Annotated[
    Principal,
    Depends(role_in(Role.FINANCE, Role.AUDITOR, what="read the settlement calendar or jobs")),
]
PartyReader = Annotated[
    Principal,
    Depends(role_in(Role.OPERATOR, Role.ISSUER, Role.FINANCE, Role.AUDITOR,
                    what="read statements or payment lines")),
]
Day = Annotated[dt.date, Path(description="Service day, YYYY-MM-DD.")]
PARTY_TAG = r"^(OPR|ISS|GOV|CTR)-[0-9]{1,9}$"
PartyTag = Annotated[str, Path(
    pattern=PARTY_TAG, description="The party as statement files name it: OPR-101, ISS-1, "
    "GOV-420100, CTR-0.", examples=["OPR-101"],
)]
CALENDAR_DAYS = 31  # GET /v1/days without a range: the month up to the current service day


def _problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {s: PROBLEM_SCHEMA for s in statuses}


@overload
def _utc(at: dt.datetime) -> dt.datetime: ...
@overload
def _utc(at: None) -> None: ...
def _utc(at: dt.datetime | None) -> dt.datetime | None:
    """A stored time with its zone: every time Tongka stores is UTC, and SQLite gives it back
    without one (RFC 3339 date-times need it)."""
    return at.replace(tzinfo=dt.UTC) if at is not None and at.tzinfo is None else at


# ---------------------------------------------------------------- calendar


class DayOut(BaseModel):
    model_config = ConfigDict(frozen=True)

    day: dt.date
    state: DayState = Field(description="empty, open (settle it), settled, or changed (settled, "
                            "then a late or withdrawn batch came: settle it again)")
    needs_settlement: bool
    batches: int = Field(description="Batches stored for the day, not withdrawn.")
    late_batches: int = Field(description="Of those, batches that came after a settlement.")
    taps: int = Field(description="Taps those batches put in the tap store.")
    quarantined: int
    revision: int = Field(description="Bumped by every change of the day's taps.")
    cleared_revision: int | None = Field(description="The revision the stored legs were priced "
                                         "at; null: never cleared.")
    cleared_current: bool
    settled_revision: int | None
    runs: int = Field(description="Settlement runs of the day (each has its payment file).")
    last_run_at: dt.datetime | None

    @classmethod
    def of(cls, d: CalendarDay) -> DayOut:
        return cls(
            day=d.day, state=d.state, needs_settlement=d.needs_settlement, batches=d.batches,
            late_batches=d.late_batches, taps=d.taps, quarantined=d.quarantined,
            revision=d.revision, cleared_revision=d.cleared_revision,
            cleared_current=d.cleared_current, settled_revision=d.settled_revision, runs=d.runs,
            last_run_at=_utc(d.last_run_at),
        )


class CalendarOut(BaseModel):
    model_config = ConfigDict(frozen=True)

    first: dt.date
    last: dt.date
    days: list[DayOut]


@router.get("/v1/days", summary="The settlement calendar: what arrived, what is settled",
            responses=_problems(400, 403))
def calendar(
    centre: CentreDep,
    _: Overseer,
    first: Annotated[dt.date | None, Query(description="First day (default: 30 days before "
                                           "last).")] = None,
    last: Annotated[dt.date | None, Query(description="Last day (default: the current "
                                          "service day).")] = None,
) -> CalendarOut:
    """Every day of the range (at most a year), days that saw nothing included."""
    # each given end is checked before the other is derived from it (no date overflows)
    span = dt.timedelta(days=CALENDAR_DAYS - 1)
    if last is None:
        last = min(checked_day(first, "first") + span, LAST_DAY) if first else _today()
    if first is None:
        first = max(checked_day(last, "last") - span, FIRST_DAY)
    days = service_days(centre.engine, centre.home, first=first, last=last)
    return CalendarOut(first=first, last=last, days=[DayOut.of(d) for d in days])


def _today() -> dt.date:
    return service_day_of(int(time.time() * 1000))


# ---------------------------------------------------------------- settlement jobs


class JobOut(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: int
    kind: str
    day: dt.date
    state: Literal["queued", "running", "succeeded", "failed"]
    reason: str = Field(description="The settlement reason asked for; empty: the default "
                        "(late_batch for a changed settled day, else initial).")
    progress: str = Field(description="The step running: clearing, settling, writing the "
                          "payment file; done or failed at the end.")
    result: dict[str, Any] | None = Field(description="A succeeded settlement: run, entry, "
                                          "positions sum, instructions, payment files.")
    error_code: str | None = Field(description="A failed job's stable code (JOB_INTERRUPTED: "
                                   "the server stopped; start the settlement again).")
    error: str | None
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None

    @classmethod
    def of(cls, j: jobs.JobView) -> JobOut:
        return cls(
            id=j.id, kind=j.kind, day=j.day, state=j.state,  # type: ignore[arg-type]
            reason=j.reason, progress=j.progress, result=j.result, error_code=j.error_code,
            error=j.error, created_at=_utc(j.created_at), started_at=_utc(j.started_at),
            finished_at=_utc(j.finished_at),
        )


class SettlementIn(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    reason: Reason | None = Field(
        default=None, description="Why a settled day is settled again (late_batch, "
        "tariff_correction, manual_correction); default: late_batch when it changed, else "
        "initial.")


@router.post(
    "/v1/days/{day}/settlement", status_code=202,
    summary="Start settling a day (a job: poll its Location)",
    responses=_problems(400, 403, 409),
)
def start_settlement(
    day: Day,
    request: Request,
    response: Response,
    background: BackgroundTasks,
    centre: CentreDep,
    principal: Finance,
    body: Annotated[SettlementIn | None, Body()] = None,
) -> JobOut:
    """Queue the settlement of ``day`` (cleared first if it never was or changed since); 409
    SETTLEMENT_RUNNING with the job's ``job_id`` while one for the day is queued or running."""
    reason = body.reason.value if body is not None and body.reason is not None else ""
    job = jobs.submit(centre.engine, checked_day(day), reason=reason, key_id=principal.key_id)
    # Woken once the response is on its way, so the request's own last write (its audit row)
    # is committed before the job's first: on SQLite, tongka.jobs' progress writes still fail
    # on a concurrent commit (reported), and the job has the processor to itself.
    background.add_task(request.app.state.worker.wake)
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return JobOut.of(job)


@router.get("/v1/jobs", summary="Recent jobs, newest first", responses=_problems(403))
def recent_jobs(
    centre: CentreDep, _: Overseer,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> list[JobOut]:
    return [JobOut.of(j) for j in jobs.recent(centre.engine, limit=limit)]


@router.get("/v1/jobs/{job_id}", summary="A job's state, progress and result",
            responses=_problems(403, 404))
def job(job_id: Annotated[int, Path(ge=1, le=2**62)], centre: CentreDep, _: Overseer) -> JobOut:
    found = jobs.get(centre.engine, job_id)
    if found is None:
        raise ApiError(404, ErrorCode.JOB_NOT_FOUND, f"job {job_id} not found")
    return JobOut.of(found)


# ---------------------------------------------------------------- statements


class ObligationOut(BaseModel):
    model_config = ConfigDict(frozen=True)

    counterparty: str
    counterparty_name: str
    kind: Literal["revenue", "fee", "subsidy", "rebate"]
    direction: Literal["receivable", "payable"]
    amount_fen: int = Field(description="Signed: positive receivable, negative payable.")


class PaymentOut(BaseModel):
    model_config = ConfigDict(frozen=True)

    direction: Literal["pay_in", "pay_out"]
    amount_fen: int = Field(description="Positive; pay_in: the party pays the settlement "
                            "account, pay_out: it is paid.")


class StatementOut(BaseModel):
    model_config = ConfigDict(frozen=True)

    day: dt.date
    party: str
    party_name: str
    net_position_fen: int
    receivable_fen: int
    payable_fen: int
    payment: PaymentOut | None = Field(description="The day's payment as if settled once "
                                       "(statements show the whole day, not one run).")
    obligations: list[ObligationOut]
    legs_revision: int = Field(description="The day revision the legs shown were priced at.")
    stale: str | None = Field(description="Set when the day's taps changed since: these "
                              "figures are not the settlement.")


JSON, HTML, CSV = "application/json", "text/html", "text/csv"
STATEMENT_TYPES = (JSON, HTML, CSV)  # in the server's order of preference


@router.get(
    "/v1/days/{day}/statements/{party}",
    summary="A party's statement of a day, as JSON, HTML or CSV (by Accept)",
    response_model=StatementOut,
    responses={
        200: {"content": {HTML: {"schema": {"type": "string"}},
                          CSV: {"schema": {"type": "string"}}},
              "description": "JSON (amounts in integer fen), the HTML page with charts, or "
                             "the CSV (amount_fen and amount_cny columns)."},
        **_problems(403, 404, 406, 409),
    },
)
def statement(
    day: Day, party: PartyTag, request: Request, centre: CentreDep, principal: PartyReader,
) -> Response:
    """Built from the day's stored legs as ``tongka report`` builds it (a dry-run settlement,
    nothing posted); a day whose taps changed since says so (``stale``)."""
    who = parse_tag(party)
    if not _may_read(principal, who):
        raise _no_statement(who, day)
    media = negotiate(request.headers.get("accept"), STATEMENT_TYPES)
    if media is None:
        raise ApiError(406, ErrorCode.NOT_ACCEPTABLE,
                       f"a statement is {', '.join(STATEMENT_TYPES)}; Accept allows none")
    figures = _caches(request).figures(centre, checked_day(day))
    if who not in figures.result.positions:
        raise _no_statement(who, day)
    stale = staleness(centre.engine, centre.home, day)
    headers = {"Vary": "Accept"}
    if media == JSON:
        body = _statement_json(figures, who, stale, centre).model_dump_json().encode()
        return Response(body, media_type=JSON, headers=headers)
    files = _caches(request).rendered(centre, figures, who, stale)
    stem = f"statement-{day.isoformat()}-{who.tag}"
    if media == HTML:
        return Response(files.html, media_type="text/html; charset=utf-8", headers=headers)
    headers["Content-Disposition"] = f'inline; filename="{stem}.csv"'
    return Response(files.csv, media_type="text/csv; charset=utf-8", headers=headers)


def _may_read(principal: Principal, party: Party) -> bool:
    if principal.reads_all:
        return True
    if party.role == PartyRole.OPERATOR:
        return principal.is_operator(party.code)
    if party.role == PartyRole.ISSUER:
        return principal.is_issuer(party.code)
    return False


def _no_statement(party: Party, day: dt.date) -> ApiError:
    """The one answer for a statement that does not exist and for another party's."""
    return ApiError(404, ErrorCode.STATEMENT_NOT_FOUND, f"no statement of {party.tag} for {day}")


@dataclasses.dataclass(frozen=True)
class _Figures:
    """A day's dry-run settlement from its stored legs, what every statement of it shows."""

    day: dt.date
    revision: int
    legs: pa.Table
    result: SettlementResult
    signals: pa.Table | None


@dataclasses.dataclass(frozen=True, slots=True)
class _Files:
    csv: bytes
    html: bytes


def _statement_json(figures: _Figures, party: Party, stale: str | None, centre: Centre
                    ) -> StatementOut:
    registry = centre.tariffs.registry
    result = figures.result
    mine = party_obligations(party, result.obligations)
    payment = next((p for p in result.payments if p.party == party), None)
    return StatementOut(
        day=figures.day,
        party=party.tag,
        party_name=party_name(party, registry),
        net_position_fen=result.positions[party],
        receivable_fen=sum(a for *_, a in mine if a > 0),
        payable_fen=-sum(a for *_, a in mine if a < 0),
        payment=None if payment is None else PaymentOut(
            direction=payment.direction.name.lower(),  # type: ignore[arg-type]
            amount_fen=payment.amount_fen),
        obligations=[
            ObligationOut(
                counterparty=cp.tag, counterparty_name=party_name(cp, registry),
                kind=ob.kind.name.lower(),  # type: ignore[arg-type]
                direction="receivable" if a > 0 else "payable", amount_fen=a,
            )
            for cp, ob, a in mine
        ],
        legs_revision=figures.revision,
        stale=stale,
    )


class _Memo:
    """A small LRU of computed values; a key asked for by several requests at once is computed
    once (the others wait for it), different keys in parallel."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._values: OrderedDict[Hashable, Any] = OrderedDict()
        self._computing: dict[Hashable, threading.Lock] = {}
        self._lock = threading.Lock()

    def get(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        with self._lock:
            if key in self._values:
                self._values.move_to_end(key)
                return self._values[key]
            mine = self._computing.setdefault(key, threading.Lock())
        with mine:
            with self._lock:
                if key in self._values:
                    return self._values[key]
            try:
                value = compute()
            finally:
                with self._lock:
                    self._computing.pop(key, None)
            with self._lock:
                self._values[key] = value
                while len(self._values) > self._size:
                    self._values.popitem(last=False)
            return value


class _Caches:
    """Statements are slow to build (a dry-run settlement of the whole day, then charts), and
    the same legs always give the same figures: one dry run per (day, legs revision), one
    rendering per party and staleness warning. The tariffs are the server's for its life."""

    def __init__(self) -> None:
        self._figures = _Memo(2)  # a day's legs and allocation: large, keep few
        self._files = _Memo(128)

    def figures(self, centre: Centre, day: dt.date) -> _Figures:
        revision = legs_revision(centre.home, day)
        found: _Figures = self._figures.get((day, revision), lambda: _dry_run(centre, day))
        return found

    def rendered(self, centre: Centre, figures: _Figures, party: Party, stale: str | None
                 ) -> _Files:
        key = (figures.day, figures.revision, party, stale)
        found: _Files = self._files.get(key, lambda: _render(centre, figures, party, stale))
        return found


def _caches(request: Request) -> _Caches:
    caches = getattr(request.app.state, "statement_caches", None)
    if caches is None:  # two requests racing here build two: harmless, one is kept
        caches = request.app.state.statement_caches = _Caches()
    return caches  # type: ignore[no-any-return]


def _dry_run(centre: Centre, day: dt.date) -> _Figures:
    """As ``tongka.reporting.write_report``: the stored legs settled as a dry run (nothing
    posted) and the day's risk signals. The revision is the one the legs themselves carry."""
    legs = read_day_legs(centre.home, day)
    revision = int((legs.schema.metadata or {}).get(REVISION_KEY, b"-1"))
    result = settle_day(centre.engine, day, legs, centre.tariffs, dry_run=True)
    return _Figures(day, revision, legs, result, read_day_signals(centre.home, day))


def _render(centre: Centre, figures: _Figures, party: Party, stale: str | None) -> _Files:
    """One party's CSV and HTML exactly as ``tongka report`` writes them: ``write_statements``
    writes a statement per party of the result's positions, so it is given this party's only
    (its page reads the day's obligations and payments, which stay whole); the overview it
    writes too is discarded."""
    one = dataclasses.replace(figures.result, positions={party: figures.result.positions[party]})
    with tempfile.TemporaryDirectory(prefix="tongka-statement-") as tmp:
        out = FilePath(tmp)
        write_statements(out, figures.day, figures.legs, one, centre.tariffs.registry,
                         workers=1, stale=stale, signals=figures.signals)
        stem = out / f"statement-{figures.day.isoformat()}-{party.tag}"
        return _Files(stem.with_suffix(".csv").read_bytes(), stem.with_suffix(".html").read_bytes())


# ---------------------------------------------------------------- payments


@router.get(
    "/v1/days/{day}/payments",
    summary="The day's payment instructions across its runs (CSV)",
    response_class=Response,
    responses={200: {"content": {CSV: {"schema": {"type": "string"}}},
                     "description": "The columns of the run files (payments/D/run-NNN.csv), "
                                    "every run in order; an operator or issuer key gets its "
                                    "own party's lines only."},
               **_problems(400, 403)},
)
def payments(day: Day, centre: CentreDep, principal: PartyReader) -> Response:
    """From the runs as stored (the database is the truth; the run files are its exports),
    rendered as the run files are; a day never settled has the header alone."""
    own = _own_party(principal)
    with session_factory(centre.engine)() as session:
        runs = load_runs(session, Scope.DAY, checked_day(day))
    column = PAYMENT_FIELDS.index("party")
    out = io.StringIO(newline="")
    writer = csv.writer(out)
    writer.writerow(PAYMENT_FIELDS)
    for run in runs:
        rows = csv.reader(io.StringIO(render_run(run, centre.tariffs.registry).decode("utf-8")))
        next(rows)  # each run file's own header
        writer.writerows(r for r in rows if own is None or r[column] == own.tag)
    return Response(
        out.getvalue().encode("utf-8"), media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'inline; filename="payments-{day.isoformat()}.csv"'},
    )


def _own_party(principal: Principal) -> Party | None:
    """The one party whose lines a key may see; None: every party's (finance, auditor)."""
    if principal.reads_all:
        return None
    role = PartyRole.OPERATOR if principal.role is Role.OPERATOR else PartyRole.ISSUER
    assert principal.party is not None  # operator and issuer keys are bound to a party
    return Party(role, principal.party)


# ---------------------------------------------------------------- month close


class MonthCloseIn(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    reason: Reason = Field(default=Reason.INITIAL, description="initial for the first close; "
                           "late_batch, tariff_correction or manual_correction to close again.")


class MonthCloseOut(BaseModel):
    model_config = ConfigDict(frozen=True)

    month: str
    run: int | None
    entry_id: int | None = Field(description="null: nothing changed since the last close.")
    reason: Reason
    rebates: int
    rebate_fen: int
    positions_sum_fen: int
    instructions: int
    payment_files: list[str]
    card_load_files: int


@router.post("/v1/months/{month}/close", summary="Close a month: rebates, posted and paid",
             responses=_problems(400, 403, 409))
def close_month(
    month: Annotated[str, Path(description="The calendar month, YYYY-MM.", examples=["2026-11"],
                                max_length=16)],
    centre: CentreDep,
    _: Finance,
    body: Annotated[MonthCloseIn | None, Body()] = None,
) -> MonthCloseOut:
    """``tongka close-month``: refused (409 MONTH_NOT_SETTLED) while a day of the month still
    needs settling."""
    try:
        first = parse_month(month)
    except (ValueError, OverflowError):
        raise InputError(f"not a month: {month!r} (expected YYYY-MM, e.g. 2026-11)",
                         code=ErrorCode.MONTH_INVALID) from None
    checked_day(first, "month")
    closed = close(centre.engine, centre.home, first, centre.tariffs,
                   reason=(body or MonthCloseIn()).reason.value)
    result = closed.result
    return MonthCloseOut(
        month=f"{first:%Y-%m}", run=result.run, entry_id=result.entry_id, reason=result.reason,
        rebates=len(result.rebates), rebate_fen=sum(r.rebate_fen for r in result.rebates),
        positions_sum_fen=sum(result.positions.values()),
        instructions=len(result.instructions),
        payment_files=[p.name for p in closed.payment_files],
        card_load_files=len(closed.card_load_files),
    )
