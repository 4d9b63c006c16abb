"""Batches and quarantined rows in SQL, and the read-side views operators ask for (SPEC §4).

A ``Batch`` is the manifest of one submitted file, identified by the SHA-256 of its bytes; a
``QuarantinedRow`` is one rejected row with its code, message and original record. The
functions below back ``tongka batches list|show`` and ``tongka quarantine list|export``;
resubmission goes through ingestion (``clearing.ingest.resubmit``).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Engine,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    func,
    select,
    text,
)
from sqlalchemy.orm import Mapped, Session, mapped_column

from clearing import files
from clearing.db import Base, session_factory
from clearing.errors import StateError
from clearing.sealed import quarantine_context, unseal
from tariffs.error_codes import ErrorCode

ID = BigInteger().with_variant(Integer(), "sqlite")  # SQLite autoincrements INTEGER keys only


class BatchStatus:
    """Stored batch statuses; a batch is stored wholly or not at all."""

    ACCEPTED = "accepted"  # stored: good rows in the tap store, bad rows in quarantine
    WITHDRAWN = "withdrawn"  # SPEC v1.2 §4: every row left its day into the archive


# SPEC v1.2 §4: the same bytes twice are one batch, among the batches not withdrawn.
LIVE_BATCH = text("status <> 'withdrawn'")


class QuarantineStatus:
    OPEN = "open"  # waiting for a correction
    RESUBMITTED = "resubmitted"  # a corrected version went through ingestion again
    WITHDRAWN = "withdrawn"  # its batch was withdrawn: kept for audit, never resubmitted


class Batch(Base):
    """The manifest of one submitted file (SPEC §4: identified by the SHA-256 of its bytes)."""

    __tablename__ = "batches"
    __table_args__ = (
        UniqueConstraint("service_day", "day_seq", name="uq_batches_day_seq"),
        Index("uq_batches_live_sha256", "file_sha256", unique=True,
              sqlite_where=LIVE_BATCH, postgresql_where=LIVE_BATCH),
    )

    id: Mapped[int] = mapped_column(ID, primary_key=True, autoincrement=True)
    file_sha256: Mapped[str] = mapped_column(String(64))
    service_day: Mapped[dt.date] = mapped_column(Date, index=True)
    # SPEC §4 acceptance order: the batch's position among its day's batches, from 1.
    day_seq: Mapped[int] = mapped_column(Integer)
    operator: Mapped[int] = mapped_column(Integer)
    source_format: Mapped[str] = mapped_column(String(32))
    source_name: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(24))
    late: Mapped[bool] = mapped_column(Boolean)  # the day was settled when the batch came
    received: Mapped[int] = mapped_column(BigInteger)  # rows in the file
    accepted: Mapped[int] = mapped_column(BigInteger)  # stored in the tap store
    duplicates: Mapped[int] = mapped_column(BigInteger)  # counted, not stored, not priced
    quarantined: Mapped[int] = mapped_column(BigInteger)  # rejected with a row error
    # under the data dir; None if 0 taps. Once withdrawn: the archived copy (SPEC v1.2 §4).
    tap_path: Mapped[str | None] = mapped_column(String(255))
    # the duplicate rows, kept so re-acceptance after a withdrawal can reconsider them; None
    # when there are none, or for batches stored before migration 0004 (never kept)
    dup_path: Mapped[str | None] = mapped_column(String(255))
    errors_json: Mapped[str] = mapped_column(Text)  # {"CODE": count, ...}
    received_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    accepted_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    withdrawn_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    withdrawn_reason: Mapped[str | None] = mapped_column(Text)


class QuarantinedRow(Base):
    """One rejected row, kept until an operator resubmits it corrected."""

    __tablename__ = "quarantine"

    id: Mapped[int] = mapped_column(ID, primary_key=True, autoincrement=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("batches.id"), index=True)
    row: Mapped[int] = mapped_column(BigInteger)  # 0-based row in the source file
    code: Mapped[str] = mapped_column(String(48), index=True)
    field: Mapped[str] = mapped_column(String(64))
    message: Mapped[str] = mapped_column(Text)
    record: Mapped[str] = mapped_column(Text)  # the original record as JSON, PII tokenised
    status: Mapped[str] = mapped_column(String(16))
    resubmitted_batch_id: Mapped[int | None] = mapped_column(ForeignKey("batches.id"))
    # the raw record as it came in, AES-GCM sealed (clearing.sealed): it may hold personal
    # numbers (docs/pii.md); None for rows stored before migration 0004 or without a key
    raw_sealed: Mapped[bytes | None] = mapped_column(LargeBinary)


# --------------------------------------------------------------------------- read-side values


@dataclass(frozen=True, slots=True)
class BatchSummary:
    id: int
    file_sha256: str
    operator: int
    service_day: dt.date
    day_seq: int
    source_format: str
    source_name: str
    status: str
    late: bool
    received: int
    accepted: int
    duplicates: int
    quarantined: int
    received_at: dt.datetime
    accepted_at: dt.datetime
    withdrawn_at: dt.datetime | None = None
    withdrawn_reason: str | None = None


@dataclass(frozen=True, slots=True)
class QuarantineEntry:
    id: int
    batch_id: int
    row: int
    code: str
    field: str
    message: str
    record: dict[str, Any]
    status: str


@dataclass(frozen=True, slots=True)
class ErrorGroup:
    """One error code of a batch: how many rows, and the first few as examples."""

    code: str
    count: int
    examples: tuple[QuarantineEntry, ...]


@dataclass(frozen=True, slots=True)
class BatchDetail:
    batch: BatchSummary
    errors: tuple[ErrorGroup, ...]  # most frequent first
    tap_path: str | None


def _summary(b: Batch) -> BatchSummary:
    return BatchSummary(b.id, b.file_sha256, b.operator, b.service_day, b.day_seq,
                        b.source_format, b.source_name, b.status, b.late, b.received,
                        b.accepted, b.duplicates, b.quarantined, b.received_at, b.accepted_at,
                        b.withdrawn_at, b.withdrawn_reason)


def _entry(q: QuarantinedRow) -> QuarantineEntry:
    return QuarantineEntry(q.id, q.batch_id, q.row, q.code, q.field, q.message,
                           json.loads(q.record), q.status)


def list_batches(engine: Engine, *, day: dt.date | None = None) -> list[BatchSummary]:
    """Every stored batch (or a day's), in acceptance order: day, then position in the day."""
    with session_factory(engine)() as s:
        query = select(Batch).order_by(Batch.service_day, Batch.day_seq)
        if day is not None:
            query = query.where(Batch.service_day == day)
        return [_summary(b) for b in s.scalars(query)]


def find_batch(session: Session, batch: int | str) -> Batch:
    """A batch by id, or by its SHA-256 or a unique prefix of it (8 hex digits at least)."""
    if isinstance(batch, int) or (isinstance(batch, str) and batch.isdigit() and len(batch) < 8):
        found = session.get(Batch, int(batch))
        if found is None:
            raise StateError(f"no batch with id {batch}", code=ErrorCode.BATCH_NOT_FOUND)
        return found
    prefix = str(batch).lower()
    if len(prefix) < 8:
        raise StateError(f"batch {batch!r}: give an id or at least 8 hex digits of its SHA-256",
                         code=ErrorCode.BATCH_NOT_FOUND)
    rows = list(session.scalars(select(Batch).where(Batch.file_sha256.startswith(prefix))))
    if len(rows) > 1:
        # the same bytes withdrawn, then submitted again: the prefix means the live batch
        rows = [b for b in rows if b.status != BatchStatus.WITHDRAWN]
    if len(rows) != 1:
        raise StateError(f"no batch or several batches match {batch!r}",
                         code=ErrorCode.BATCH_NOT_FOUND)
    return rows[0]


def batch_detail(engine: Engine, batch_id: int | str, *, examples: int = 3) -> BatchDetail:
    """A batch's counts and its rejected rows grouped by code, with the first few of each."""
    with session_factory(engine)() as s:
        b = find_batch(s, batch_id)
        counts = s.execute(
            select(QuarantinedRow.code, func.count())
            .where(QuarantinedRow.batch_id == b.id)
            .group_by(QuarantinedRow.code)
        ).all()
        groups = []
        for code, count in sorted(counts, key=lambda c: (-c[1], c[0])):
            first = s.scalars(
                select(QuarantinedRow)
                .where(QuarantinedRow.batch_id == b.id, QuarantinedRow.code == code)
                .order_by(QuarantinedRow.row)
                .limit(examples)
            )
            groups.append(ErrorGroup(code, int(count), tuple(_entry(q) for q in first)))
        return BatchDetail(_summary(b), tuple(groups), b.tap_path)


def quarantined_rows(
    engine: Engine,
    batch_id: int | str | None = None,
    *,
    code: str | None = None,
    include_resubmitted: bool = False,
    limit: int | None = None,
) -> list[QuarantineEntry]:
    """Rejected rows still waiting for a correction (all, a batch's, or a code's), in file order."""
    with session_factory(engine)() as s:
        return [_entry(q) for q in _quarantine_query(s, batch_id, code, include_resubmitted, limit)]


def _quarantine_query(s: Session, batch_id: int | str | None, code: str | None,
                      include_resubmitted: bool, limit: int | None) -> Iterator[QuarantinedRow]:
    query = select(QuarantinedRow).order_by(QuarantinedRow.batch_id, QuarantinedRow.row,
                                            QuarantinedRow.id)
    if batch_id is not None:
        query = query.where(QuarantinedRow.batch_id == find_batch(s, batch_id).id)
    if code is not None:
        query = query.where(QuarantinedRow.code == code)
    if not include_resubmitted:
        query = query.where(QuarantinedRow.status == QuarantineStatus.OPEN)
    if limit is not None:
        query = query.limit(limit)
    yield from s.scalars(query.execution_options(yield_per=10_000))


def export_quarantine(
    engine: Engine, path: Path, *, batch_id: int | str | None = None, code: str | None = None,
    seal_key: bytes | None = None,
) -> int:
    """Write open quarantined rows as JSON Lines for correction; returns the number of rows.

    One object per line: ``quarantine_id``, ``batch_id``, ``batch_sha256``, ``service_day``,
    ``operator``, ``row``, ``code``, ``field``, ``message``, ``record`` (the tap fields) and
    ``raw``: the row's raw record as it came in, so that even a row that could not be parsed
    can be corrected (SPEC v1.2 §4). ``raw`` is ``{"base64": ...}`` when ``seal_key`` opens
    it, ``{"sealed": true}`` without a key, ``null`` when none was kept. Fix ``record`` in
    place, keep ``quarantine_id``, drop the lines you do not resubmit, and hand the file to
    ``tongka quarantine resubmit``. With a key the file may hold personal numbers in clear:
    it is the operator's to protect and delete (docs/pii.md).
    """
    n = 0
    with (
        session_factory(engine)() as s,
        files.atomic_file(Path(path), "w", encoding="utf-8") as out,
    ):
        batches = {b.id: b for b in s.scalars(select(Batch))}
        for q in _quarantine_query(s, batch_id, code, False, None):
            b = batches[q.batch_id]
            out.write(json.dumps({
                "quarantine_id": q.id, "batch_id": q.batch_id, "batch_sha256": b.file_sha256,
                "service_day": b.service_day.isoformat(), "operator": b.operator, "row": q.row,
                "code": q.code, "field": q.field, "message": q.message,
                "record": json.loads(q.record),
                "raw": _raw_field(q, b.file_sha256, seal_key),
            }, ensure_ascii=False) + "\n")
            n += 1
    return n


def _raw_field(q: QuarantinedRow, batch_sha256: str, key: bytes | None) -> dict[str, object] | None:
    """A quarantined row's raw record for export: opened with the key, or said to be sealed."""
    if q.raw_sealed is None:
        return None
    if key is None:
        return {"sealed": True}
    plain = unseal(key, bytes(q.raw_sealed), context=quarantine_context(batch_sha256, q.row))
    return {"base64": base64.b64encode(plain).decode("ascii")}
