"""Batch files and corrections received over HTTP: a request body streamed to a spool file and
hashed on the way, then handed to the same use cases as ``tongka ingest`` and ``tongka
quarantine resubmit``, under the operator of the caller's key.

Free of routing, so the API (``tongka.service.routes.batches``) and the pages share it. The
body is never held whole in memory while it arrives (the use cases then read the spool file
once, as they read any batch file); it is bounded in size (``MAX_UPLOAD_BYTES``, from
Content-Length up front and while streaming), in the time between two chunks
(``READ_TIMEOUT_S``, so a stalled client cannot hold a worker) and in total time
(``MAX_UPLOAD_S``, so neither can a trickling one). No Content-Encoding is decoded: a gzip
bomb is refused unread. Spool files live in ``Centre.inbox`` and are removed in every case.

An operator key submits batches of its own operator only: a file whose metadata names
another operator, or with a row of another registered operator, is refused before anything is
stored (a row with an operator code the registry does not know is an ordinary bad row, for
quarantine). Corrections may name only the quarantined rows of the batch they are sent for.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import tempfile
import time
from collections.abc import AsyncIterable, AsyncIterator, Collection, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from clearing import tapstore
from clearing.batches import Batch, BatchStatus, QuarantinedRow
from clearing.db import session_factory
from clearing.errors import InputError
from clearing.ingest import (
    ALREADY_INGESTED,
    MAX_BATCH_ROWS,
    BatchReport,
    ingest_file,
    parse_canonical,
    resubmit,
)
from clearing.input_files import MAX_BATCH_BYTES, read_input_bytes
from readers.config import ReaderConfigError
from readers.registry import detect_format_bytes, get_adapter
from tariffs.registry import Registry
from tongka.ingest_files import CANONICAL_FORMATS, ingest_raw
from tongka.service.centre import Centre
from tongka.service.problems import ApiError

MAX_UPLOAD_BYTES = MAX_BATCH_BYTES  # the command line's limit for one batch file
READ_TIMEOUT_S = 30.0  # longest wait for the next chunk of a body before 408
MAX_UPLOAD_S = 3600.0  # a whole body: 1 GiB at 300 kB/s; a trickle cannot hold a worker longer
WRITE_BYTES = 1 << 20  # chunks are gathered to this size, then hashed and written off the loop

PARQUET = "application/vnd.apache.parquet"
UPLOAD_TYPES = frozenset({
    PARQUET, "application/octet-stream", "text/plain", "text/csv", "application/x-ndjson",
    "application/json",
})
PARQUET_MAGIC = b"PAR1"
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]")
_ID_CHUNK = 10_000  # quarantine ids looked up per query (SQLite's bound on parameters)


@dataclass(frozen=True, slots=True)
class Spooled:
    """A request body on disk: where, its SHA-256, its size and its first bytes."""

    path: Path
    sha256: str
    size: int
    head: bytes


@dataclass(frozen=True, slots=True)
class Uploaded:
    """What an upload did: the batch's report; ``created`` False for bytes already stored."""

    report: BatchReport
    created: bool


@dataclass(frozen=True, slots=True)
class Corrected:
    """The batches a corrections file made, and the quarantine ids it named that were already
    corrected before (nothing to do for them)."""

    reports: tuple[BatchReport, ...]
    skipped: tuple[int, ...]


# --------------------------------------------------------------------------- the body


def check_body_headers(content_type: str | None, content_encoding: str | None,
                       content_length: str | None, *, max_bytes: int | None = None) -> None:
    """Refuse before reading a byte: an encoded body (415: never decompressed, so no bomb), a
    content type no batch format has (415), a declared length beyond the limit (413)."""
    encoding = (content_encoding or "").strip().lower()
    if encoding not in ("", "identity"):
        raise InputError(f"Content-Encoding {content_encoding!r} is not accepted: send the "
                         "file's bytes as they are (no compression)", code="UPLOAD_CONTENT_TYPE")
    media = media_type(content_type)
    if media not in UPLOAD_TYPES:
        raise InputError(f"Content-Type {media!r} is not a batch format; send one of "
                         f"{', '.join(sorted(UPLOAD_TYPES))}", code="UPLOAD_CONTENT_TYPE")
    limit = MAX_UPLOAD_BYTES if max_bytes is None else max_bytes
    if content_length is not None and content_length.strip().isdigit() and (
        int(content_length) > limit
    ):
        raise _too_large(int(content_length), limit)


def media_type(content_type: str | None) -> str:
    """The media type without parameters, lower case; none given is a byte stream (RFC 9110
    §8.3)."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return media or "application/octet-stream"


@asynccontextmanager
async def spooled(
    chunks: AsyncIterable[bytes],
    inbox: Path,
    *,
    name: str = "",
    suffix: str = "",
    content_length: str | None = None,
    max_bytes: int | None = None,
    read_timeout_s: float | None = None,
    max_seconds: float | None = None,
) -> AsyncIterator[Spooled]:
    """The body written to a private directory under ``inbox`` while SHA-256 hashes it; the
    directory is removed when the block ends, however it ends.

    The file is named ``name`` made safe, else ``upload-<sha>`` plus ``suffix`` (``.parquet``
    for a body with Parquet's magic bytes): ingestion records it as the batch's source name.
    """
    limit = MAX_UPLOAD_BYTES if max_bytes is None else max_bytes
    timeout = READ_TIMEOUT_S if read_timeout_s is None else read_timeout_s
    deadline = time.monotonic() + (MAX_UPLOAD_S if max_seconds is None else max_seconds)
    folder = Path(tempfile.mkdtemp(prefix="upload-", dir=inbox))
    try:
        part = folder / ".part"
        digest = hashlib.sha256()
        size, head, pending = 0, b"", bytearray()
        with open(part, "wb") as out:

            def flush(data: bytes) -> None:
                digest.update(data)
                out.write(data)

            async for chunk in _paced(chunks, timeout, deadline):
                size += len(chunk)
                if size > limit:
                    raise _too_large(size, limit, streaming=True)
                if len(head) < len(PARQUET_MAGIC):
                    head = (head + chunk)[: len(PARQUET_MAGIC)]
                pending += chunk
                if len(pending) >= WRITE_BYTES:
                    await anyio.to_thread.run_sync(flush, bytes(pending))
                    pending.clear()
            if pending:
                await anyio.to_thread.run_sync(flush, bytes(pending))
        if size == 0:
            raise InputError("the request body is empty: send the batch file's bytes",
                             code="UPLOAD_EMPTY")
        declared = (content_length or "").strip()
        if declared.isdigit() and int(declared) != size:
            raise InputError(f"the body ended after {size:,} of {int(declared):,} bytes",
                             code="UPLOAD_INCOMPLETE")
        sha = digest.hexdigest()
        suffix = suffix or (".parquet" if head == PARQUET_MAGIC else "")
        path = folder / (safe_name(name) or f"upload-{sha[:16]}{suffix}")
        part.rename(path)
        yield Spooled(path, sha, size, head)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


async def _paced(chunks: AsyncIterable[bytes], timeout: float, deadline: float
                 ) -> AsyncIterator[bytes]:
    """The chunks of a body, each within ``timeout`` seconds of the last, all before
    ``deadline``; a client that goes away mid-body is an incomplete upload, not a crash."""
    iterator = aiter(chunks)
    while True:
        wait = min(timeout, deadline - time.monotonic())
        try:
            with anyio.fail_after(max(wait, 0.0)):
                chunk = await anext(iterator)
        except StopAsyncIteration:
            return
        except TimeoutError:
            raise InputError(
                f"the upload stalled: no data for {timeout:g} s" if wait >= timeout else
                "the upload took too long: send it faster or split the file",
                code="UPLOAD_TIMEOUT") from None
        except ClientDisconnect:
            raise InputError("the client went away before the body ended",
                             code="UPLOAD_INCOMPLETE") from None
        if chunk:
            yield chunk


def safe_name(name: str) -> str:
    """A client's file name reduced to a harmless one (its last path part, in [A-Za-z0-9._-],
    at most 200 characters, not hidden); "" when nothing is left."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    return _SAFE_NAME.sub("_", base).lstrip(".")[:200]


def _too_large(size: int, limit: int, *, streaming: bool = False) -> InputError:
    what = "more than" if streaming else f"{size:,} bytes,"
    return InputError(f"the body is {what} the limit of {limit:,} bytes for one batch; split "
                      "the day into several batch files", code="INPUT_TOO_LARGE")


# --------------------------------------------------------------------------- batches


async def upload_batch(
    centre: Centre,
    operator: int,
    chunks: AsyncIterable[bytes],
    *,
    content_type: str | None = None,
    content_encoding: str | None = None,
    content_length: str | None = None,
    fmt: str | None = None,
    name: str = "",
    max_bytes: int | None = None,
    read_timeout_s: float | None = None,
) -> Uploaded:
    """Receive one batch file of ``operator`` and ingest it (``tongka ingest`` semantics).

    Canonical Parquet when ``fmt`` says so, or, without ``fmt``, when the content type or the
    Parquet magic bytes do; else a raw reader format (``fmt`` or detected). The same bytes again
    give the stored batch (``created`` False).
    """
    check_body_headers(content_type, content_encoding, content_length, max_bytes=max_bytes)
    canonical_type = media_type(content_type) == PARQUET
    suffix = ".parquet" if fmt in CANONICAL_FORMATS or canonical_type else ""
    async with spooled(chunks, centre.inbox, name=name, suffix=suffix,
                       content_length=content_length, max_bytes=max_bytes,
                       read_timeout_s=read_timeout_s) as body:
        centre.metrics.upload_bytes.inc(body.size)
        canonical = fmt in CANONICAL_FORMATS or (
            fmt is None and (canonical_type or body.head == PARQUET_MAGIC))
        report = await run_in_threadpool(_ingest, centre, operator, body, fmt, canonical)
    created = report.status != ALREADY_INGESTED
    if created:
        centre.metrics.batches.inc()
        centre.metrics.taps.inc(report.accepted)
    return Uploaded(report, created)


def _ingest(centre: Centre, operator: int, body: Spooled, fmt: str | None, canonical: bool
            ) -> BatchReport:
    """The batch stored under ``operator``, once the file is known to declare no other; the
    declared operators are not read again for bytes ``operator`` already stored."""
    stored = _stored_operator(centre, body.sha256)
    if stored is None:
        declared = (_canonical_declared(body.path) if canonical
                    else _raw_declared(centre, body.path, fmt))
        refuse_foreign(declared, operator, centre.tariffs.registry)
    elif stored != operator:
        raise _mismatch()
    try:
        if canonical:
            report = ingest_file(
                centre.engine, centre.home, body.path, centre.tariffs.registry,
                operator=operator, input_dir=centre.inbox, tariffs=centre.tariffs,
                seal_key=centre.seal_key,
            )
        else:
            report = ingest_raw(
                centre.engine, centre.home, body.path, centre.tariffs, centre.reader_config,
                fmt=fmt, operator=operator, input_dir=centre.inbox,
                seal_key=centre.seal_key,
            )
    except ReaderConfigError as exc:
        raise _reader_config(exc) from None
    if report.operator != operator:  # the same bytes stored by another operator meanwhile
        raise _mismatch()
    return report


@dataclass(frozen=True, slots=True)
class Declared:
    """Who a file says it belongs to: its metadata's operator (raw bytes, None when absent)
    and the operator codes of its rows."""

    metadata: bytes | None
    rows: np.ndarray


def refuse_foreign(declared: Declared, operator: int, registry: Registry) -> None:
    """403 OPERATOR_MISMATCH when the file names another operator than the key's: in its
    metadata (any other value), or in a row (another operator of the registry)."""
    meta = declared.metadata
    if meta is not None and not (meta.isdigit() and int(meta) == operator):  # read as ingestion
        raise _mismatch()
    if foreign_operators(declared.rows.tolist(), operator, registry):
        raise _mismatch()


def foreign_operators(codes: Iterable[object], operator: int, registry: Registry) -> list[int]:
    """The registered operators other than ``operator`` among ``codes`` (values that are no
    registered operator are left to acceptance, which quarantines them as UNKNOWN_OPERATOR)."""
    found = set()
    for code in codes:
        if isinstance(code, int) and not isinstance(code, bool) and code != operator and (
            code in registry.operators
        ):
            found.add(code)
    return sorted(found)


def _mismatch() -> ApiError:
    # One answer whatever the reason, naming no operator: bytes another operator stored must
    # not be confirmed beyond what the uploader's own file already says.
    return ApiError(403, "OPERATOR_MISMATCH", "the file declares another operator than your "
                    "key's, or another operator submitted these bytes; nothing was stored")


def _reader_config(exc: ReaderConfigError) -> ApiError:
    """The centre lacks a key this format needs: the server's configuration, not the file."""
    return ApiError(503, "READER_CONFIG", f"the clearing centre cannot read this format now: "
                    f"{exc.args[0]}")


def _stored_operator(centre: Centre, sha: str) -> int | None:
    """The operator of the live batch with these bytes, if one is stored."""
    with session_factory(centre.engine)() as s:
        found = s.scalar(select(Batch.operator).where(Batch.file_sha256 == sha,
                                                      Batch.status != BatchStatus.WITHDRAWN))
    return None if found is None else int(found)


def _canonical_declared(path: Path) -> Declared:
    """A canonical file's operators from its footer and its operator column alone; a file
    that cannot be read so is parsed by ingestion's own parser, which refuses it with its
    code (or, if it reads after all, gives the same answer)."""
    try:
        pf = pq.ParquetFile(path)
        if "operator" in pf.schema_arrow.names and pf.metadata.num_rows <= MAX_BATCH_ROWS:
            ops = pf.read(columns=["operator"]).column("operator")
            meta = (pf.schema_arrow.metadata or {}).get(tapstore.META_OPERATOR)
            return Declared(meta, _unique(ops))
    except (pa.ArrowException, OSError, ValueError):
        pass
    table, metadata = parse_canonical(read_input_bytes(path), path.name)
    return Declared(metadata.get(tapstore.META_OPERATOR), _unique(table.column("operator")))


def _raw_declared(centre: Centre, path: Path, fmt: str | None) -> Declared:
    """A raw file's operators: its rows as its adapter reads them (raw formats have no
    header). The file is parsed here and again by ``ingest_raw``, which offers no way to check
    the operator between parsing and storing."""
    data = read_input_bytes(path, input_dir=centre.inbox)
    name = fmt or detect_format_bytes(data, name=path.name)
    try:
        parsed = get_adapter(name).parse_bytes(data, centre.reader_config, name=path.name)
    except ReaderConfigError as exc:
        raise _reader_config(exc) from None
    return Declared(None, _unique(parsed.taps.column("operator")))


def _unique(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    return np.asarray(pc.unique(column).drop_null().to_numpy(zero_copy_only=False))


# --------------------------------------------------------------------------- corrections


async def submit_corrections(
    centre: Centre,
    operator: int,
    batch_id: int,
    chunks: AsyncIterable[bytes],
    *,
    content_type: str | None = None,
    content_encoding: str | None = None,
    content_length: str | None = None,
    max_bytes: int | None = None,
    read_timeout_s: float | None = None,
) -> Corrected:
    """Resubmit a corrections file (JSON Lines as the quarantine export writes it) for one
    batch of ``operator``'s (the caller checked the batch is the operator's)."""
    check_body_headers(content_type, content_encoding, content_length, max_bytes=max_bytes)
    async with spooled(chunks, centre.inbox, suffix=".jsonl", content_length=content_length,
                       max_bytes=max_bytes, read_timeout_s=read_timeout_s) as body:
        centre.metrics.upload_bytes.inc(body.size)
        result = await run_in_threadpool(_resubmit, centre, operator, batch_id, body.path)
    for report in result.reports:
        if report.status != ALREADY_INGESTED:
            centre.metrics.batches.inc()
            centre.metrics.taps.inc(report.accepted)
    return result


def _resubmit(centre: Centre, operator: int, batch_id: int, path: Path) -> Corrected:
    data = read_input_bytes(path, input_dir=centre.inbox)
    lines = correction_lines(data)
    del data
    check_corrections(lines, batch_id, operator, centre.tariffs.registry,
                      _batch_of(centre, {qid for _, qid, _ in lines}))
    done = resubmit(centre.engine, centre.home, path, centre.tariffs.registry,
                    input_dir=centre.inbox, tariffs=centre.tariffs, seal_key=centre.seal_key)
    return Corrected(done.reports, done.skipped)


def correction_lines(data: bytes) -> list[tuple[int, int, object]]:
    """(line index, quarantine id, the record's operator or None) of every line that
    ``clearing.ingest.resubmit`` would act on, read as it reads them; a line it would refuse
    is skipped here, since it then refuses the whole file itself, with its own code."""
    out: list[tuple[int, int, object]] = []
    for i, line in enumerate(data.decode("utf-8", errors="replace").splitlines()):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict) and isinstance(obj.get("quarantine_id"), int) and isinstance(
            obj.get("record"), dict
        ):
            out.append((i, int(obj["quarantine_id"]), obj["record"].get("operator")))
    return out


def check_corrections(lines: list[tuple[int, int, object]], batch_id: int, operator: int,
                      registry: Registry, batch_of: dict[int, int]) -> None:
    """Every line corrects a row of ``batch_id`` (400 INPUT_RESUBMIT_OTHER_BATCH otherwise, the
    same answer for another operator's row and for no row at all) and no record is moved to
    another registered operator (403 OPERATOR_MISMATCH). ``batch_of`` maps quarantine ids to
    their batches."""
    for line, qid, _ in lines:
        if batch_of.get(qid) != batch_id:
            raise InputError(f"line {line + 1}: quarantine id {qid} is not a row of batch "
                             f"{batch_id}; send each batch's corrections to that batch",
                             code="INPUT_RESUBMIT_OTHER_BATCH")
    if foreign_operators((op for _, _, op in lines), operator, registry):
        raise _mismatch()


def _batch_of(centre: Centre, ids: Collection[int]) -> dict[int, int]:
    """The batch of each of these quarantine ids that exists."""
    wanted = sorted(i for i in ids if -(2**63) <= i < 2**63)  # beyond: no row, and no SQL int
    found: dict[int, int] = {}
    with session_factory(centre.engine)() as s:
        for start in range(0, len(wanted), _ID_CHUNK):
            rows = s.execute(select(QuarantinedRow.id, QuarantinedRow.batch_id)
                             .where(QuarantinedRow.id.in_(wanted[start:start + _ID_CHUNK])))
            found.update((int(qid), int(batch)) for qid, batch in rows)
    return found

