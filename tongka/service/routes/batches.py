"""Batches over HTTP: an operator uploads its batch files and corrections and reads its own
batches and quarantined rows; finance and auditors read every operator's.

The same use cases as ``tongka ingest``, ``tongka batches list|show`` and ``tongka quarantine
list|export|resubmit``; the upload itself is ``tongka.service.uploads``. Another operator's
batch is 404 exactly like one that does not exist (never 403), so a key never learns whether
someone else's batch exists. Quarantine is shown without its sealed raw records.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import json
import shutil
import tempfile
from pathlib import Path as FilePath
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from clearing.batches import (
    BatchDetail,
    BatchSummary,
    QuarantineEntry,
    batch_detail,
    export_quarantine,
    list_batches,
    quarantined_rows,
)
from clearing.errors import StateError
from clearing.ingest import BatchReport
from tongka.access import Principal, Role
from tongka.service import uploads
from tongka.service.centre import Centre
from tongka.service.deps import CentreDep, role_in
from tongka.service.negotiation import negotiate
from tongka.service.problems import PROBLEM_SCHEMA, ApiError

router = APIRouter(prefix="/v1/batches", tags=["batches"])

Submitter = Annotated[
    Principal, Depends(role_in(Role.OPERATOR, what="submit batches or corrections"))
]
Reader = Annotated[
    Principal,
    Depends(role_in(Role.OPERATOR, Role.FINANCE, Role.AUDITOR, what="read batches")),
]
BatchId = Annotated[int, Path(ge=1, le=2**63 - 1, description="The batch's id.")]

JSON, CSV, JSONL = "application/json", "text/csv", "application/x-ndjson"
QUARANTINE_PAGE = 1000  # rows per page at most; the export gives them all
MAX_OFFSET = 1_000_000  # paging reads the rows before the page; the export has no bound
LIST_PAGE = 10_000

BODY_DOC: dict[str, Any] = {"requestBody": {
    "required": True,
    "description": "The file's bytes as they are (no Content-Encoding). Content types: "
                   f"{', '.join(sorted(uploads.UPLOAD_TYPES))}.",
    "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
}}


def _problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {s: PROBLEM_SCHEMA for s in statuses}


def _utc(at: dt.datetime) -> dt.datetime:
    """A stored time with its zone: Tongka stores UTC, and SQLite gives it back without one
    (an RFC 3339 date-time, as the schema promises, needs it)."""
    return at.replace(tzinfo=dt.UTC) if at.tzinfo is None else at


# ---------------------------------------------------------------- response models


class UploadOut(BaseModel):
    model_config = ConfigDict(frozen=True)

    batch_id: int
    file_sha256: str = Field(description="SHA-256 of the bytes received: the batch's identity.")
    operator: int
    service_day: dt.date
    source_name: str
    received: int = Field(description="Rows in the file: accepted + duplicates + quarantined.")
    accepted: int
    duplicates: int = Field(description="Rows an earlier accepted tap already has (not errors).")
    quarantined: int
    late: bool = Field(description="The day was already settled: it is marked for settling "
                       "again.")
    status: Literal["accepted", "already_ingested"] = Field(
        description="already_ingested: these bytes were stored before; this is that batch.")
    errors: dict[str, int] = Field(description="Quarantined rows by error code.")

    @classmethod
    def of(cls, r: BatchReport) -> UploadOut:
        return cls(batch_id=r.batch_id, file_sha256=r.file_sha256, operator=r.operator,
                   service_day=r.service_day, source_name=r.source_name, received=r.received,
                   accepted=r.accepted, duplicates=r.duplicates, quarantined=r.quarantined,
                   late=r.late, status=r.status,  # type: ignore[arg-type]
                   errors=dict(r.errors))


class BatchOut(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: int
    file_sha256: str
    operator: int
    service_day: dt.date
    day_seq: int = Field(description="The batch's place among its day's batches, from 1.")
    source_format: str
    source_name: str
    status: Literal["accepted", "withdrawn"]
    late: bool
    received: int
    accepted: int
    duplicates: int
    quarantined: int
    received_at: dt.datetime
    accepted_at: dt.datetime
    withdrawn_at: dt.datetime | None
    withdrawn_reason: str | None

    @classmethod
    def fields_of(cls, b: BatchSummary) -> dict[str, Any]:
        """The summary's fields, its times as UTC (the model mirrors ``BatchSummary``)."""
        return {**dataclasses.asdict(b), "received_at": _utc(b.received_at),
                "accepted_at": _utc(b.accepted_at),
                "withdrawn_at": None if b.withdrawn_at is None else _utc(b.withdrawn_at)}

    @classmethod
    def of(cls, b: BatchSummary) -> BatchOut:
        return cls(**cls.fields_of(b))


class BatchListOut(BaseModel):
    model_config = ConfigDict(frozen=True)

    batches: list[BatchOut] = Field(description="In acceptance order: day, then place in it.")
    next_offset: int | None = Field(description="The offset of the next page; null: no more.")


class QuarantineRowOut(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: int = Field(description="The quarantine id a correction names.")
    batch_id: int
    row: int = Field(description="0-based row in the file (line number - 1 for text).")
    code: str = Field(description="The row error code (docs/error-codes.md).")
    field: str
    message: str
    record: dict[str, Any] = Field(description="The record as it came in, personal numbers "
                                   "tokenised.")
    status: Literal["open", "resubmitted", "withdrawn"]

    @classmethod
    def of(cls, q: QuarantineEntry) -> QuarantineRowOut:
        return cls(id=q.id, batch_id=q.batch_id, row=q.row, code=q.code, field=q.field,
                   message=q.message, record=q.record,
                   status=q.status)  # type: ignore[arg-type]


class ErrorGroupOut(BaseModel):
    model_config = ConfigDict(frozen=True)

    code: str
    count: int
    examples: list[QuarantineRowOut] = Field(description="The first rows with this code.")


class BatchDetailOut(BatchOut):
    errors: list[ErrorGroupOut] = Field(description="Rejected rows by code, most frequent "
                                        "first.")

    @classmethod
    def of_detail(cls, d: BatchDetail) -> BatchDetailOut:
        return cls(**BatchOut.fields_of(d.batch), errors=[
            ErrorGroupOut(code=g.code, count=g.count,
                          examples=[QuarantineRowOut.of(q) for q in g.examples])
            for g in d.errors
        ])


class QuarantinePageOut(BaseModel):
    model_config = ConfigDict(frozen=True)

    batch_id: int
    offset: int
    limit: int
    rows: list[QuarantineRowOut]
    next_offset: int | None = Field(description="The offset of the next page; null: no more.")


class CorrectionsOut(BaseModel):
    model_config = ConfigDict(frozen=True)

    batches: list[UploadOut] = Field(description="The batch the corrected rows made.")
    skipped: list[int] = Field(description="Quarantine ids already corrected before.")


# ---------------------------------------------------------------- upload


@router.post(
    "",
    status_code=201,
    summary="Submit one batch file (streamed)",
    response_model=UploadOut,
    responses={200: {"model": UploadOut, "description": "These bytes were stored before: the "
                     "existing batch."},
               201: {"description": "A new batch; Location names it."},
               **_problems(400, 403, 408, 413, 415, 503)},
    openapi_extra=BODY_DOC,
)
async def upload(
    request: Request,
    response: Response,
    centre: CentreDep,
    principal: Submitter,
    fmt: Annotated[str | None, Query(
        alias="format", pattern=r"^[a-z0-9_-]{1,32}$",
        description="canonical (Parquet) or a raw reader format (card, nfc, wearable, ssc, "
                    "qr, or a plugin's); detected when omitted.")] = None,
    name: Annotated[str | None, Query(
        max_length=255, description="The file's name, kept as the batch's source name.")] = None,
    content_encoding: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> UploadOut:
    """The operator is the key's: a file naming another is refused (403 OPERATOR_MISMATCH)
    and nothing is stored. 201 for a new batch, 200 with the stored batch for bytes sent
    before."""
    assert principal.party is not None  # an operator key is bound to its operator
    done = await uploads.upload_batch(
        centre, principal.party, request.stream(),
        content_type=request.headers.get("content-type"), content_encoding=content_encoding,
        content_length=request.headers.get("content-length"),
        fmt=fmt, name=name or "",
    )
    if done.created:
        response.headers["Location"] = f"/v1/batches/{done.report.batch_id}"
    else:
        response.status_code = 200
    return UploadOut.of(done.report)


# ---------------------------------------------------------------- reading


@router.get("", summary="Batches: an operator's own, or every operator's for finance and "
            "auditors", responses=_problems(403))
def batches(
    centre: CentreDep,
    principal: Reader,
    day: Annotated[dt.date | None, Query(description="Only this service day's.")] = None,
    status: Annotated[Literal["accepted", "withdrawn"] | None, Query()] = None,
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
    limit: Annotated[int, Query(ge=1, le=LIST_PAGE)] = 1000,
) -> BatchListOut:
    mine = [b for b in list_batches(centre.engine, day=day)
            if (principal.reads_all or principal.is_operator(b.operator))
            and (status is None or b.status == status)]
    page = mine[offset:offset + limit]
    more = offset + limit < len(mine)
    return BatchListOut(batches=[BatchOut.of(b) for b in page],
                        next_offset=offset + limit if more else None)


@router.get("/{batch_id}", summary="One batch: counts and its rejected rows by code",
            responses=_problems(403, 404))
def batch(batch_id: BatchId, centre: CentreDep, principal: Reader) -> BatchDetailOut:
    return BatchDetailOut.of_detail(_visible(centre, principal, batch_id))


@router.get(
    "/{batch_id}/quarantine",
    summary="A batch's quarantined rows: a page (JSON), or the corrections file (CSV, JSONL)",
    response_model=QuarantinePageOut,
    responses={200: {"content": {
        CSV: {"schema": {"type": "string"}},
        JSONL: {"schema": {"type": "string"}},
    }, "description": "JSON: a page of rows. With format=jsonl or Accept: "
                      "application/x-ndjson, every open row as `tongka quarantine export` "
                      "writes it (correct `record`, keep `quarantine_id`, send it back to "
                      "/corrections); format=csv or Accept: text/csv: the same as CSV. Raw "
                      "records are never included."},
               **_problems(403, 404, 406)},
)
def quarantine(
    batch_id: BatchId,
    centre: CentreDep,
    principal: Reader,
    fmt: Annotated[Literal["json", "csv", "jsonl"] | None, Query(
        alias="format", description="Overrides Accept.")] = None,
    accept: Annotated[str | None, Header(include_in_schema=False)] = None,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    limit: Annotated[int, Query(ge=1, le=QUARANTINE_PAGE)] = 100,
    code: Annotated[str | None, Query(max_length=48, description="Only this row error "
                                      "code.")] = None,
    include_resubmitted: Annotated[bool, Query(description="Also rows already corrected "
                                               "(the page only).")] = False,
) -> Any:
    _visible(centre, principal, batch_id)
    media = {"json": JSON, "csv": CSV, "jsonl": JSONL}[fmt] if fmt else negotiate(
        accept, (JSON, CSV, JSONL))
    if media is None:
        raise ApiError(406, "NOT_ACCEPTABLE", f"quarantine comes as {JSON}, {CSV} or {JSONL}")
    if media != JSON:
        return _export(centre, batch_id, code, media)
    rows = quarantined_rows(centre.engine, batch_id, code=code,
                            include_resubmitted=include_resubmitted, limit=offset + limit + 1)
    page = rows[offset:offset + limit]
    return QuarantinePageOut(
        batch_id=batch_id, offset=offset, limit=limit,
        rows=[QuarantineRowOut.of(q) for q in page],
        next_offset=offset + limit if len(rows) > offset + limit else None,
    )


# ---------------------------------------------------------------- corrections


@router.post(
    "/{batch_id}/corrections",
    status_code=201,
    summary="Resubmit corrected quarantined rows of a batch (JSON Lines)",
    response_model=CorrectionsOut,
    responses={200: {"model": CorrectionsOut, "description": "Nothing new: every row was "
                     "corrected before (or these bytes were sent before)."},
               **_problems(400, 403, 404, 408, 413, 415)},
    openapi_extra=BODY_DOC,
)
async def corrections(
    batch_id: BatchId,
    request: Request,
    response: Response,
    centre: CentreDep,
    principal: Submitter,
    content_encoding: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> CorrectionsOut:
    """The file as the quarantine export writes it (JSON Lines), each ``record`` corrected;
    only rows of this batch, and only the batch's own operator."""
    await run_in_threadpool(_visible, centre, principal, batch_id)
    assert principal.party is not None
    done = await uploads.submit_corrections(
        centre, principal.party, batch_id, request.stream(),
        content_type=request.headers.get("content-type"), content_encoding=content_encoding,
        content_length=request.headers.get("content-length"),
    )
    if not any(r.status != "already_ingested" for r in done.reports):
        response.status_code = 200
    return CorrectionsOut(batches=[UploadOut.of(r) for r in done.reports],
                          skipped=list(done.skipped))


# ---------------------------------------------------------------- helpers


def _visible(centre: Centre, principal: Principal, batch_id: int) -> BatchDetail:
    """The batch if the caller may see it; one 404 for none and for another operator's."""
    missing = ApiError(404, "BATCH_NOT_FOUND", f"no batch with id {batch_id}")
    try:
        detail = batch_detail(centre.engine, batch_id)
    except StateError as exc:
        if exc.code == "BATCH_NOT_FOUND":
            raise missing from None
        raise
    if not (principal.reads_all or principal.is_operator(detail.batch.operator)):
        raise missing
    return detail


EXPORT_COLUMNS = ("quarantine_id", "batch_id", "batch_sha256", "service_day", "operator", "row",
                  "code", "field", "message", "record", "raw")


def _export(centre: Centre, batch_id: int, code: str | None, media: str) -> FileResponse:
    """The batch's open rows as ``export_quarantine`` writes them (no key: raw records stay
    sealed and are only marked), as JSON Lines or as CSV with ``record`` and ``raw`` as JSON
    text; written to a temporary file, sent, then removed."""
    folder = FilePath(tempfile.mkdtemp(prefix="tongka-quarantine-"))
    try:
        jsonl = folder / f"quarantine-batch-{batch_id}.jsonl"
        export_quarantine(centre.engine, jsonl, batch_id=batch_id, code=code, seal_key=None)
        path = jsonl if media == JSONL else _as_csv(jsonl)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return FileResponse(path, media_type=f"{media}; charset=utf-8", filename=path.name,
                        background=BackgroundTask(shutil.rmtree, folder, ignore_errors=True))


def _as_csv(jsonl: FilePath) -> FilePath:
    out = jsonl.with_suffix(".csv")
    with jsonl.open(encoding="utf-8") as src, out.open("w", encoding="utf-8", newline="") as dst:
        writer = csv.writer(dst)
        writer.writerow(EXPORT_COLUMNS)
        for line in src:
            obj = json.loads(line)
            writer.writerow([
                json.dumps(obj.get(c), ensure_ascii=False) if c in ("record", "raw")
                else obj.get(c) for c in EXPORT_COLUMNS
            ])
    return out
