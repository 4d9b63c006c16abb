"""An operator's pages: upload a batch, its batches by day, a batch's quarantined rows with what
each code means, and the corrections file to download. Finance and auditors read them too;
another operator's page is 404.

The upload goes through ``tongka.service.uploads`` (the API's own streamed upload): a page
script sends the file's bytes as the request body, so the browser reports upload progress and
the server never holds the file in memory; without scripts the form posts it as
multipart/form-data, which Starlette spools to disk first.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import re
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.responses import JSONResponse, RedirectResponse, Response

from clearing.batches import batch_detail, list_batches, quarantined_rows
from clearing.errors import InputError, StateError, TongkaError
from readers.registry import format_descriptions
from settlement.parties import operator as operator_party
from settlement.parties import party_name
from tongka.service import uploads
from tongka.service.problems import problem, status_of
from tongka.web.guard import (
    CentreDep,
    PageError,
    PageRoute,
    SignedIn,
    check_csrf,
    forbidden,
    may_see_operator,
    not_found,
)
from tongka.web.render import meaning, page

router = APIRouter(route_class=PageRoute, include_in_schema=False)

OperatorCode = Annotated[int, Path(ge=0, le=2**31 - 1)]
BatchId = Annotated[int, Path(ge=1, le=2**63 - 1)]
MAX_LISTED = 500  # batches on the operator's page, newest first; ?day= narrows to one day
QUARANTINE_PAGE = 100  # quarantined rows per page
FORM_SLACK = 64 * 1024  # multipart framing allowed beyond the batch-size limit
_FORMAT = re.compile(r"^[a-z0-9_-]{1,32}$")


def _operator(centre: Any, session: Any, op: int) -> str:
    """The operator's registry name, if the signed-in key may see it (404 otherwise, also for
    codes the registry does not have)."""
    if not may_see_operator(session.principal, op) or op not in centre.tariffs.registry.operators:
        raise not_found()
    return party_name(operator_party(op), centre.tariffs.registry)


@router.get("/operators/{op}")
def operator_home(
    request: Request, op: OperatorCode, session: SignedIn, centre: CentreDep,
    day: Annotated[dt.date | None, Query()] = None,
) -> Response:
    name = _operator(centre, session, op)
    mine = [b for b in list_batches(centre.engine, day=day) if b.operator == op]
    shown = mine[::-1][:MAX_LISTED]  # newest day first, each day's latest first
    by_day = [(d, list(g)) for d, g in itertools.groupby(shown, key=lambda b: b.service_day)]
    return page(
        request, "operator.html.j2", title=f"Batches · {name}", name=name, op=op, by_day=by_day,
        total=len(mine), limited=len(mine) > MAX_LISTED, day=day,
        can_upload=session.principal.is_operator(op), formats=_formats(),
    )


def _formats() -> list[tuple[str, str]]:
    return [("canonical", "canonical Parquet batch file (SPEC §3)"),
            *format_descriptions().items()]


@router.post("/operators/{op}/batches")
async def upload(request: Request, op: OperatorCode, session: SignedIn, centre: CentreDep
                 ) -> Response:
    """A batch file for the key's own operator: the body itself (from the page script, CSRF in
    the header, ``?format=&name=``) or a multipart form (CSRF in its field). Answers JSON to
    the script, a redirect to the batch's page to the form."""
    await run_in_threadpool(_operator, centre, session, op)
    if not session.principal.is_operator(op):
        raise forbidden("submit batches for an operator")
    scripted = "application/json" in request.headers.get("accept", "")
    try:
        done = await _receive(request, session, centre, op)
    except PageError as exc:  # the CSRF check
        if not scripted:
            raise
        request.state.error_code = exc.code
        return problem(exc.status, exc.code, exc.message, instance=request.url.path)
    except TongkaError as exc:
        request.state.error_code = exc.code
        if scripted:
            return problem(status_of(exc), exc.code, str(exc.args[0]), instance=request.url.path)
        session.notify(f"The file was refused: {exc.args[0]} [{exc.code}]", "error")
        return RedirectResponse(f"/operators/{op}", status_code=303)
    report = done.report
    url = f"/operators/{op}/batches/{report.batch_id}"
    if done.created:
        late = " Late: the day was settled before, it is marked to settle again." if (
            report.late) else ""
        session.notify(f"Batch {report.batch_id} stored: {report.accepted:,} taps accepted, "
                       f"{report.quarantined:,} quarantined, {report.duplicates:,} "
                       f"duplicates.{late}")
    else:
        session.notify(f"These bytes were stored before: this is batch {report.batch_id}.")
    if scripted:
        return JSONResponse({"batch_id": report.batch_id, "created": done.created,
                             "accepted": report.accepted, "quarantined": report.quarantined,
                             "duplicates": report.duplicates, "url": url},
                            status_code=201 if done.created else 200)
    return RedirectResponse(url, status_code=303)


async def _receive(request: Request, session: Any, centre: Any, op: int) -> uploads.Uploaded:
    media = uploads.media_type(request.headers.get("content-type"))
    if media != "multipart/form-data":
        check_csrf(session, None, request)
        return await uploads.upload_batch(
            centre, op, request.stream(),
            content_type=request.headers.get("content-type"),
            content_encoding=request.headers.get("content-encoding"),
            content_length=request.headers.get("content-length"),
            fmt=_fmt(request.query_params.get("format")),
            name=request.query_params.get("name", "")[:255],
        )
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > uploads.MAX_UPLOAD_BYTES + FORM_SLACK:
        # refused before Starlette spools a byte of it
        raise InputError(f"the form is {int(length):,} bytes, more than the limit of "
                         f"{uploads.MAX_UPLOAD_BYTES:,} bytes for one batch; split the day "
                         "into several batch files", code="INPUT_TOO_LARGE")
    form = await request.form(max_files=1, max_fields=5)
    try:
        check_csrf(session, form, request)
        file = form.get("file")
        if not isinstance(file, UploadFile) or not file.filename:
            raise InputError("choose a batch file to upload", code="UPLOAD_EMPTY")
        fmt = form.get("format")
        return await uploads.upload_batch(
            centre, op, _chunks(file), fmt=_fmt(fmt if isinstance(fmt, str) else None),
            name=file.filename,
        )
    finally:
        await form.close()


def _fmt(value: str | None) -> str | None:
    """The format asked for; None (detect) for none or for anything not shaped like a name."""
    if not value or value == "detect" or not _FORMAT.match(value):
        return None
    return value


async def _chunks(file: UploadFile) -> AsyncIterator[bytes]:
    while chunk := await file.read(1 << 20):
        yield chunk


@router.get("/operators/{op}/batches/{batch_id}")
def batch_page(
    request: Request, op: OperatorCode, batch_id: BatchId, session: SignedIn, centre: CentreDep,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    code: Annotated[str | None, Query(max_length=48, pattern=r"^[A-Z0-9_]+$")] = None,
    corrected: Annotated[bool, Query()] = False,
) -> Response:
    """A batch's counts, its rejected rows by code with each code's meaning, and a page of the
    rows themselves (open ones; ``corrected=1`` shows the corrected too)."""
    name = _operator(centre, session, op)
    try:
        detail = batch_detail(centre.engine, batch_id)
    except StateError as exc:
        if exc.code == "BATCH_NOT_FOUND":
            raise not_found("batch") from None
        raise
    if detail.batch.operator != op:
        raise not_found("batch")
    rows = quarantined_rows(centre.engine, batch_id, code=code, include_resubmitted=corrected,
                            limit=offset + QUARANTINE_PAGE + 1)
    shown = rows[offset:offset + QUARANTINE_PAGE]
    return page(
        request, "batch.html.j2", title=f"Batch {batch_id} · {name}", name=name, op=op,
        batch=detail.batch, groups=[(g.code, g.count, meaning(g.code)) for g in detail.errors],
        rows=[(q, json.dumps(q.record, ensure_ascii=False, sort_keys=True), meaning(q.code))
              for q in shown],
        offset=offset, page_size=QUARANTINE_PAGE, more=len(rows) > offset + QUARANTINE_PAGE,
        code=code, corrected=corrected,
    )
