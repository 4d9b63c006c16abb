"""Batch ingestion (SPEC §4): identify, check, de-duplicate, store and quarantine one batch file.

The imperative shell around ``clearing.accept`` (checks) and ``clearing.tapstore`` (files and
the key index). One batch is recorded wholly or not at all:

1. the file is read once into memory (bounded by ``max_bytes``), hashed and parsed, so the
   bytes hashed are the bytes stored; the same bytes twice are one batch;
2. the acceptance checks run before any lock is taken;
3. in one SQL transaction holding the lock on every day a duplicate can reach
   (``clearing.days.lock_days``): orphans of crashed runs are removed, the batch is
   de-duplicated against the stored keys, its accepted taps are written under a temporary
   name, fsynced and renamed, its rejected rows are quarantined, and the metadata committed.

A crash before the commit leaves at most a file no batch names; the next ingestion of that
day removes it, and re-running the crashed ingestion gives exactly the state of a run that
never crashed. Two processes with the same file serialise on the day lock and the unique
index on the hash of the batches not withdrawn: one stores the batch, the other reports
``already_ingested``. A withdrawn batch (``clearing.withdraw``) releases its hash.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain, compress, repeat
from operator import attrgetter, itemgetter
from pathlib import Path
from typing import cast

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import ValidationError
from sqlalchemy import Engine, Table, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from clearing import tapstore
from clearing.accept import check_taps
from clearing.batches import Batch, BatchStatus, QuarantinedRow, QuarantineStatus
from clearing.days import DayStatus, day_status, lock_days, mark_needs_settlement
from clearing.db import session_factory, transaction
from clearing.errors import InputError, RowError
from clearing.input_files import MAX_BATCH_BYTES, read_input_bytes
from clearing.sealed import Sealer, quarantine_context
from clearing.taps import (
    FULL_TAP_SCHEMA,
    TAP_COLUMNS,
    TAP_SCHEMA,
    TapRecord,
    taps_table,
    with_optional_columns,
)
from tariffs.load import TariffSet
from tariffs.registry import Registry, load_registry

MAX_BATCH_ROWS = 50_000_000  # five times the whole circle's busiest day
SOURCE_ROW = "source_row"  # optional int64 column: each tap's row in the raw source file
SOURCE_RAW = "source_raw"  # optional binary column: each tap's raw record, kept if rejected

ALREADY_INGESTED = "already_ingested"


@dataclass(frozen=True, slots=True)
class BatchReport:
    """What ingesting one file did; ``received = accepted + duplicates + quarantined``."""

    batch_id: int
    file_sha256: str
    operator: int
    service_day: dt.date
    received: int
    accepted: int
    duplicates: int
    quarantined: int
    status: str  # "accepted" | "already_ingested"
    late: bool  # the day was already settled: it is marked for re-settlement
    errors: Mapping[str, int] = field(default_factory=dict)  # rejected rows by code
    source_name: str = ""


# A test hook: called with the name of each step boundary (the SIGKILL tests kill there).
_checkpoint: Callable[[str], None] = lambda _step: None  # noqa: E731


# --------------------------------------------------------------------------- reading a file


def parse_canonical(data: bytes, name: str, *, max_rows: int = MAX_BATCH_ROWS
                    ) -> tuple[pa.Table, dict[bytes, bytes]]:
    """A canonical batch's taps and schema metadata; InputError if it is not one.

    The footer is checked before any data page is decoded: the row count bounds memory
    (every column has a fixed width), so a small file claiming a huge table is refused.
    """
    try:
        pf = pq.ParquetFile(pa.BufferReader(pa.py_buffer(data)))
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise InputError(f"{name}: not a readable Parquet file ({exc})",
                         code="INPUT_CORRUPT") from None
    rows = pf.metadata.num_rows
    if rows > max_rows:
        raise InputError(f"{name}: {rows:,} rows, more than the limit of {max_rows:,} for one "
                         "batch", code="INPUT_TOO_LARGE")
    check_schema(pf.schema_arrow, name)
    try:
        optional = [f.name for f in FULL_TAP_SCHEMA if f.name not in TAP_COLUMNS
                    and f.name in pf.schema_arrow.names]
        table = pf.read(columns=list(TAP_COLUMNS) + optional, use_threads=True)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise InputError(f"{name}: corrupt Parquet data ({exc})", code="INPUT_CORRUPT") from None
    if table.num_rows != rows:
        raise InputError(f"{name}: footer says {rows} rows, data has {table.num_rows}",
                         code="INPUT_CORRUPT")
    return table, dict(pf.schema_arrow.metadata or {})


def check_schema(schema: pa.Schema, name: str) -> None:
    """Exactly the columns of TAP_SCHEMA with their types (nullability and order are free),
    and optionally those of ``FULL_TAP_SCHEMA`` (``balance_fen``, SPEC v1.2 §3)."""
    expected = {f.name: f.type for f in FULL_TAP_SCHEMA}
    have = {f.name: f.type for f in schema}
    missing = [c for c in TAP_SCHEMA.names if c not in have]
    extra = [c for c in have if c not in expected]
    wrong = [f"{c} is {have[c]}, expected {t}" for c, t in expected.items()
             if c in have and have[c] != t]
    problems = ([f"missing columns {', '.join(missing)}"] if missing else []) + (
        [f"unexpected columns {', '.join(extra)}"] if extra else []) + wrong
    if problems:
        raise InputError(f"{name}: not a canonical tap batch: {'; '.join(problems)} "
                         "(see docs/batch-format.md)", code="INPUT_SCHEMA")


def declared(metadata: Mapping[bytes, bytes], name: str, service_day: dt.date | None,
             operator: int | None) -> tuple[dt.date, int]:
    """The batch's service day and operator: the overrides, else the file's metadata."""
    if service_day is None:
        raw = metadata.get(tapstore.META_DAY)
        if raw is None:
            raise InputError(f"{name}: no service day: the file has no tongka.service_day "
                             "metadata; give it with --date", code="INPUT_METADATA")
        try:
            service_day = dt.date.fromisoformat(raw.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            raise InputError(f"{name}: tongka.service_day {raw!r} is not YYYY-MM-DD",
                             code="INPUT_METADATA") from None
    if operator is None:
        raw = metadata.get(tapstore.META_OPERATOR)
        if raw is None:
            raise InputError(f"{name}: no operator: the file has no tongka.operator metadata; "
                             "give it with --operator", code="INPUT_METADATA")
        if not raw.isdigit():
            raise InputError(f"{name}: tongka.operator {raw!r} is not a decimal operator code",
                             code="INPUT_METADATA")
        operator = int(raw)
    return service_day, int(operator)


# --------------------------------------------------------------------------- ingestion


def ingest_file(
    engine: Engine,
    data_dir: Path,
    path: Path,
    registry: Registry,
    *,
    service_day: dt.date | None = None,
    operator: int | None = None,
    input_dir: Path | None = None,
    max_bytes: int = MAX_BATCH_BYTES,
    max_rows: int = MAX_BATCH_ROWS,
    tariffs: TariffSet | None = None,
    seal_key: bytes | None = None,
    keys: tapstore.KeyIndex | None = None,
) -> BatchReport:
    """Ingest one canonical Parquet batch (docs/batch-format.md).

    ``service_day`` and ``operator`` override the file's metadata; ``input_dir``, when set,
    is the only directory files may come from. A file that cannot be read as a batch raises
    InputError and writes nothing; a readable one is stored row by row (SPEC §4). ``keys``:
    the calling loop's key index (see ``ingest_taps``).
    """
    path = Path(path)
    data = read_input_bytes(path, input_dir=input_dir, max_bytes=max_bytes)
    sha = hashlib.sha256(data).hexdigest()
    known = _stored_report(engine, sha)
    if known is not None:
        return known
    table, metadata = parse_canonical(data, path.name, max_rows=max_rows)
    del data
    day, op = declared(metadata, path.name, service_day, operator)
    return ingest_taps(engine, data_dir, table, [], file_sha256=sha, source_format="canonical",
                       source_name=path.name, service_day=day, operator=op, registry=registry,
                       tariffs=tariffs, seal_key=seal_key, keys=keys)


def ingest_taps(
    engine: Engine,
    data_dir: Path,
    taps: pa.Table,
    adapter_errors: Sequence[RowError],
    *,
    file_sha256: str,
    source_format: str,
    source_name: str,
    service_day: dt.date,
    operator: int,
    registry: Registry | None = None,
    tariffs: TariffSet | None = None,
    reach_days: int = tapstore.DEDUP_REACH_DAYS,
    resolves: Sequence[int] = (),
    seal_key: bytes | None = None,
    raw_records: Callable[[list[int]], list[bytes]] | None = None,
    keys: tapstore.KeyIndex | None = None,
) -> BatchReport:
    """Ingest a batch already parsed into canonical taps (the reader adapters' entry point).

    ``taps`` has the TAP_SCHEMA columns (and optionally ``source_row``, each tap's 0-based
    row in the raw file, used to number its row errors); ``adapter_errors`` are the rows the
    adapter could not parse. ``file_sha256`` is the hash of the raw file's bytes: the batch's
    identity. ``resolves`` lists quarantine ids this batch corrects (resubmission).
    ``seal_key`` seals each rejected row's raw record into quarantine (``clearing.sealed``;
    the raw is the error's ``raw``, else the ``source_raw`` column, else the record's values
    as JSON); without it no raw record is kept, since none may be stored in clear.
    ``raw_records`` (the adapter's ``ParseResult.raw_records``) gives the raw bytes of the
    rows acceptance rejects, by their source rows, so they too can be corrected byte for byte.
    ``keys``: a ``tapstore.KeyIndex`` shared by the batches of one call (same data directory):
    the stored keys are read once per call and each batch probes its own keys into them;
    without it the stored keys stream through the batch's (the same result, SPEC §4).
    """
    registry = registry if registry is not None else load_registry()
    if operator not in registry.operators:
        raise InputError(f"{source_name}: batch operator {operator} is not in the registry",
                         code="INPUT_METADATA")
    known = _stored_report(engine, file_sha256)
    if known is not None:
        return known
    missing = [c for c in TAP_COLUMNS if c not in taps.column_names]
    if missing:
        raise InputError(f"{source_name}: tap table lacks {', '.join(missing)}",
                         code="INPUT_SCHEMA")
    check_schema(taps.select([c for c in FULL_TAP_SCHEMA.names if c in taps.column_names]
                             ).schema, source_name)
    received_at = _now()
    candidate, row_errors = check_taps(taps, registry, service_day, tariffs=tariffs)
    if SOURCE_ROW in taps.column_names:
        source_rows = np.asarray(taps.column(SOURCE_ROW).to_numpy(), dtype=np.int64)
        row_errors = [RowError(e.code, int(source_rows[e.row]), e.field, e.message, e.record,
                               _source_raw(taps, e))
                      for e in row_errors]
    elif SOURCE_RAW in taps.column_names:
        row_errors = [dataclasses.replace(e, raw=_source_raw(taps, e)) for e in row_errors]
    if raw_records is not None and seal_key is not None and row_errors:
        # only rows acceptance rejected: few, so their raw bytes are looked up one by one
        raws = raw_records([e.row for e in row_errors])
        row_errors = [e if e.raw else dataclasses.replace(e, raw=raw)
                      for e, raw in zip(row_errors, raws, strict=True)]
    errors = sorted([*adapter_errors, *row_errors], key=attrgetter("row"))
    window = [service_day + dt.timedelta(days=k) for k in range(-reach_days, reach_days + 1)]
    written: list[Path] = []
    committing = False  # past this point a failure may hide a commit: never delete the file
    try:
        with transaction(engine) as s:
            lock_days(s, window)
            _checkpoint("locked")
            existing = s.scalar(select(Batch).where(Batch.file_sha256 == file_sha256,
                                                    Batch.status != BatchStatus.WITHDRAWN))
            if existing is not None:
                return _report(existing, ALREADY_INGESTED)
            tapstore.remove_strays(data_dir, window, tapstore.committed_paths(s, window))
            _checkpoint("cleaned")
            # refreshed under the lock: the index sees every commit to the window
            if keys is not None and keys.refresh(s, window):
                status = tapstore.dedup((), taps, candidate, stored_hits=keys.hits(window, taps))
            else:
                status = tapstore.dedup(tapstore.iter_keys(data_dir, s, window), taps, candidate)
            accepted_mask = status == tapstore.ACCEPTED
            accepted = int(np.count_nonzero(accepted_mask))
            duplicates = int(np.count_nonzero(status == tapstore.DUPLICATE))
            day_seq = (s.scalar(select(func.max(Batch.day_seq))
                                .where(Batch.service_day == service_day)) or 0) + 1
            rel = tapstore.batch_relpath(service_day, operator, file_sha256) if accepted else None
            dup_rel = (tapstore.dup_relpath(service_day, operator, file_sha256)
                       if duplicates else None)
            batch = Batch(
                file_sha256=file_sha256, service_day=service_day, day_seq=day_seq,
                operator=operator, source_format=source_format, source_name=source_name[:255],
                status=BatchStatus.ACCEPTED, late=day_status(s, service_day) is DayStatus.SETTLED,
                received=taps.num_rows + len(adapter_errors), accepted=accepted,
                duplicates=duplicates, quarantined=len(errors), tap_path=rel, dup_path=dup_rel,
                errors_json=json.dumps(dict(sorted(Counter(map(attrgetter("code"), errors))
                                                   .items()))),
                received_at=received_at, accepted_at=_now(),
            )
            s.add(batch)
            s.flush()
            _checkpoint("batch_row")
            metadata = {
                tapstore.META_DAY: service_day.isoformat().encode(),
                tapstore.META_OPERATOR: str(operator).encode(),
                tapstore.META_SHA: file_sha256.encode(),
                tapstore.META_DAY_SEQ: str(day_seq).encode(),
            }
            # The files are written (compressed, fsynced, renamed) on a second thread while
            # the rejected rows go to SQL: pyarrow's writer, zstd and fsync release the GIL.
            # Both are done before the commit; a failure of either waits for the other.
            files = _Background(_write_files, data_dir, rel, dup_rel, taps, status,
                                accepted_mask, metadata, written) if errors else None
            try:
                if files is None:
                    _write_files(data_dir, rel, dup_rel, taps, status, accepted_mask,
                                 metadata, written)
                _quarantine(s, batch.id, errors, file_sha256, seal_key)
            finally:
                if files is not None:
                    files.join()
            if rel is not None:
                _checkpoint("file_renamed")
            _checkpoint("quarantined")
            if resolves:
                s.execute(update(QuarantinedRow)
                          .where(QuarantinedRow.id.in_(list(resolves)),
                                 QuarantinedRow.status == QuarantineStatus.OPEN)
                          .values(status=QuarantineStatus.RESUBMITTED,
                                  resubmitted_batch_id=batch.id))
            # SPEC §4: a late batch re-opens its settled day; one that adds no tap (all
            # duplicates or rejected) changes nothing to settle, and leaves the day settled.
            if accepted or not batch.late:
                mark_needs_settlement(s, service_day)
            report = _report(batch, BatchStatus.ACCEPTED)
            _checkpoint("before_commit")
            committing = True
        _checkpoint("committed")
        if keys is not None and keys.enabled and rel is not None:  # a rolled-back one adds none
            keys.add(service_day, report.batch_id, rel, taps, accepted_mask)
        return report
    except IntegrityError:
        # Another process stored the same bytes (declared for another day) meanwhile.
        _discard(written, committing)
        known = _stored_report(engine, file_sha256)
        if known is None:
            raise
        return known
    except BaseException:
        _discard(written, committing)
        raise


def _discard(paths: Sequence[Path], committing: bool) -> None:
    """Remove the files of a batch that failed before its commit.

    A failure during the commit may hide a commit that happened (a connection lost after the
    server committed): the files stay, and the next ingestion of the day removes them if no
    committed batch names them.
    """
    if not committing:
        for path in paths:
            path.unlink(missing_ok=True)


def _write_files(data_dir: Path, rel: str | None, dup_rel: str | None, taps: pa.Table,
                 status: np.ndarray, accepted_mask: np.ndarray, metadata: dict[bytes, bytes],
                 written: list[Path]) -> None:
    """The batch's accepted taps and its duplicates, each file crash-safely; each path is put
    in ``written`` once it exists, for ``_discard``."""
    if rel is not None:
        stored = with_optional_columns(taps.filter(pa.array(accepted_mask)))
        written.append(tapstore.write_batch_taps(data_dir, rel, stored, metadata))
        del stored
    if dup_rel is not None:
        written.append(_write_dups(data_dir, dup_rel, taps, status, metadata))


class _Background:
    """``fn(*args)`` on a thread of its own; ``join`` waits for it and raises what it raised."""

    def __init__(self, fn: Callable[..., None], *args: object) -> None:
        self._error: BaseException | None = None

        def run() -> None:
            try:
                fn(*args)
            except BaseException as exc:  # handed to the joining thread
                self._error = exc

        self._thread = threading.Thread(target=run, name="ingest-files", daemon=True)
        self._thread.start()

    def join(self) -> None:
        self._thread.join()
        if self._error is not None:
            raise self._error


def _write_dups(data_dir: Path, rel: str, taps: pa.Table, status: np.ndarray,
                metadata: dict[bytes, bytes]) -> Path:
    """Keep the batch's duplicate rows: a withdrawal may make them acceptable (SPEC v1.2 §4)."""
    candidates = status != tapstore.NOT_CANDIDATE
    positions = np.flatnonzero(status[candidates] == tapstore.DUPLICATE)
    dups = with_optional_columns(taps.filter(pa.array(status == tapstore.DUPLICATE)))
    return tapstore.write_batch_dups(data_dir, rel, dups, positions, metadata)


def _source_raw(taps: pa.Table, e: RowError) -> bytes:
    """A rejected tap's raw record from the adapter's ``source_raw`` column, if it gave one."""
    if e.raw or SOURCE_RAW not in taps.column_names:
        return e.raw
    value = taps.column(SOURCE_RAW)[e.row].as_py()
    return bytes(value) if value is not None else b""


def _raw_bytes(e: RowError) -> bytes:
    """What quarantine seals for a row: its raw record, else its values (canonical batches:
    the record holds no personal number, sealed anyway so every row is treated alike)."""
    if e.raw:
        return e.raw
    return json.dumps(e.record, default=str, ensure_ascii=False, sort_keys=True).encode()


# json.dumps(record, default=str, ensure_ascii=False) builds an encoder per call; one encoder
# gives the same text several times faster (a bad batch quarantines thousands of rows)
_RECORD_JSON = json.JSONEncoder(default=str, ensure_ascii=False)
# A canonical record (the tap columns in order, every value an int) as that encoder writes it:
# an int is its repr either way, and formatting one string beats walking a dict per row
_TAP_RECORD_JSON = "{" + ", ".join(f"{json.dumps(c)}: %d" for c in TAP_COLUMNS) + "}"


def _record_json(record: Mapping[str, object]) -> str:
    """The record as quarantine keeps it: ``_RECORD_JSON``'s text, the common case faster."""
    if len(record) == len(TAP_COLUMNS) and tuple(record) == TAP_COLUMNS:
        values = tuple(record.values())
        if all(type(v) is int for v in values):  # not bool, not an IntEnum, not None
            return _TAP_RECORD_JSON % values
    return _RECORD_JSON.encode(record)


_QUARANTINE_COLUMNS = ("batch_id", "row", "code", "field", "message", "record", "status",
                       "resubmitted_batch_id", "raw_sealed")
_QUARANTINE_CHUNK = 20_000  # rows per executemany
_MARKERS = {"qmark": "?", "format": "%s", "pyformat": "%s"}  # positional, per DB-API style


def _records_json(records: Sequence[Mapping[str, object]], *, sort_keys: bool = False
                  ) -> list[str]:
    """``_record_json`` of each record (``sort_keys``: ``_raw_bytes``' text, decoded), the
    canonical ones a chunk at a time.

    A canonical batch's rejected rows all have canonical records (the tap columns in order,
    every value an int): their values are formatted by one ``%`` over one template repeated
    per record, so no Python runs per record; any other record goes through ``_record_json``
    (or ``_raw_bytes``' ``json.dumps``) as before. An int's text has no newline, so the
    records' texts are the lines of the formatted string.
    """
    keyed = list(map(TAP_COLUMNS.__eq__, map(tuple, records)))
    canonical = list(compress(records, keyed))
    fast: list[str] | None = None
    if canonical and set(map(type, canonical)) == {dict}:
        dicts = cast(list[dict[str, object]], canonical)
        # each record's values in its template's order: the tap columns', or sorted (json's)
        values = tuple(chain.from_iterable(map(_SORTED_TAP_VALUES, dicts) if sort_keys
                                           else map(dict.values, dicts)))
        if set(map(type, values)) == {int}:  # not bool, not an IntEnum, not None
            template = _SORTED_TAP_RECORD_JSON if sort_keys else _TAP_RECORD_JSON
            fast = ((template + "\n") * len(canonical) % values).split("\n")[:-1]
    slow = _sorted_record_json if sort_keys else _record_json
    if fast is None:
        return list(map(slow, records))
    if len(fast) == len(records):
        return fast
    texts = iter(fast)
    return [next(texts) if k else slow(r) for k, r in zip(keyed, records, strict=True)]


# A canonical record as ``_raw_bytes`` writes it (json.dumps with sort_keys), and its values
# in that order
_SORTED_TAP_RECORD_JSON = "{" + ", ".join(f"{json.dumps(c)}: %d" for c in sorted(TAP_COLUMNS)) + "}"
_SORTED_TAP_VALUES = itemgetter(*sorted(TAP_COLUMNS))


def _sorted_record_json(record: Mapping[str, object]) -> str:
    """``_raw_bytes``' text of a record that has no raw bytes."""
    return json.dumps(record, default=str, ensure_ascii=False, sort_keys=True)


def _quarantine(s: Session, batch_id: int, errors: Sequence[RowError], batch_sha256: str,
                seal_key: bytes | None) -> None:
    """One SQL row per rejected row, inserted in chunks (a bad batch can have many: a 15M
    day quarantines 170 000).

    The rows go to the driver's ``executemany`` as tuples, in the session's transaction:
    SQLAlchemy's per-row parameter handling (dicts, bind processors; none of these columns
    has one) was most of the time. A driver with another parameter style gets Core's insert.
    The tuples are zipped from columns, and the record texts made a chunk at a time
    (``_records_json``): a canonical batch's rows run no Python of their own.
    """
    chunk = _QUARANTINE_CHUNK
    sealer = Sealer(seal_key) if seal_key is not None else None
    conn = s.connection()
    table = cast(Table, QuarantinedRow.__table__)
    marker = _MARKERS.get(conn.dialect.paramstyle)
    quote = conn.dialect.identifier_preparer.quote
    sql = (f"INSERT INTO {quote(table.name)} "
           f"({', '.join(quote(c) for c in _QUARANTINE_COLUMNS)}) "
           f"VALUES ({', '.join([marker or ''] * len(_QUARANTINE_COLUMNS))})")
    for start in range(0, len(errors), chunk):
        part = errors[start:start + chunk]
        rows_of = list(map(attrgetter("row"), part))
        records = list(map(attrgetter("record"), part))
        sealed: Iterable[bytes | None] = repeat(None)
        if sealer is not None:
            sealed = [sealer.seal(raw, context=quarantine_context(batch_sha256, row))
                      for raw, row in zip(_raws(part, records), rows_of, strict=True)]
        rows = list(zip(repeat(batch_id), rows_of, map(str, map(attrgetter("code"), part)),
                        map(attrgetter("field"), part), map(attrgetter("message"), part),
                        _records_json(records), repeat(QuarantineStatus.OPEN), repeat(None),
                        sealed))
        if marker is not None:
            conn.exec_driver_sql(sql, rows)
        else:
            conn.execute(insert(table), [dict(zip(_QUARANTINE_COLUMNS, r, strict=True))
                                         for r in rows])


def _raws(errors: Sequence[RowError], records: list[dict[str, object]]) -> list[bytes]:
    """``_raw_bytes`` of each error, the records of those without raw bytes a chunk at a
    time (``_records_json``)."""
    missing = [not e.raw for e in errors]
    texts = iter(_records_json(list(compress(records, missing)), sort_keys=True))
    return [next(texts).encode() if m else e.raw for m, e in zip(missing, errors, strict=True)]


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _report(b: Batch, status: str) -> BatchReport:
    return BatchReport(
        batch_id=b.id, file_sha256=b.file_sha256, operator=b.operator, service_day=b.service_day,
        received=b.received, accepted=b.accepted, duplicates=b.duplicates,
        quarantined=b.quarantined, status=status, late=b.late,
        errors=json.loads(b.errors_json), source_name=b.source_name,
    )


def _stored_report(engine: Engine, sha: str) -> BatchReport | None:
    with session_factory(engine)() as s:
        b = s.scalar(select(Batch).where(Batch.file_sha256 == sha,
                                         Batch.status != BatchStatus.WITHDRAWN))
        return None if b is None else _report(b, ALREADY_INGESTED)


def remove_orphans(engine: Engine, data_dir: Path) -> list[Path]:
    """Remove every file of the tap store that no committed batch names (crash leftovers).

    Ingestion already does this for the days it locks; this sweeps every day (for
    ``tongka db check`` or a start-up hook), one day lock at a time.
    """
    root = Path(data_dir) / tapstore.TAPS_DIR
    removed: list[Path] = []
    if not root.is_dir():
        return removed
    for d in sorted(root.glob("day=*")):
        try:
            day = dt.date.fromisoformat(d.name.removeprefix("day="))
        except ValueError:
            continue
        with transaction(engine) as s:
            lock_days(s, [day])
            removed += tapstore.remove_strays(data_dir, [day], tapstore.committed_paths(s, [day]))
    return removed


# --------------------------------------------------------------------------- resubmission


@dataclass(frozen=True, slots=True)
class ResubmitResult:
    """The batches a corrections file made (one per original day and operator)."""

    reports: tuple[BatchReport, ...]
    skipped: tuple[int, ...]  # quarantine ids already resubmitted before (nothing to do)


def resubmit(engine: Engine, data_dir: Path, path: Path, registry: Registry, *,
             input_dir: Path | None = None, tariffs: TariffSet | None = None,
             seal_key: bytes | None = None) -> ResubmitResult:
    """Send corrected quarantined rows through ingestion again (SPEC §4).

    ``path`` is a JSON Lines file as ``clearing.batches.export_quarantine`` writes it, with
    each ``record`` corrected. Rows are grouped by their original batch's service day and
    operator; each group is a new batch, stored after every earlier batch (so a corrected
    row is considered when it is resubmitted), checked exactly like any other. The rows it
    corrects leave the open quarantine in the same transaction; rows failing again are
    quarantined again under the new batch. Resubmitting the same file twice changes nothing.
    """
    path = Path(path)
    data = read_input_bytes(path, input_dir=input_dir)
    lines = _corrections(data, path.name)
    ids = sorted({qid for _, qid, _ in lines})
    with session_factory(engine)() as s:
        found = {q.id: (q.status, b.service_day, b.operator) for q, b in s.execute(
            select(QuarantinedRow, Batch).join(Batch, QuarantinedRow.batch_id == Batch.id)
            .where(QuarantinedRow.id.in_(ids)))}
    unknown = [i for i in ids if i not in found]
    if unknown:
        raise InputError(f"{path.name}: quarantine ids {unknown[:10]} do not exist",
                         code="INPUT_RESUBMIT_UNKNOWN")
    groups: dict[tuple[dt.date, int], list[tuple[int, int, Record]]] = {}
    for line_no, qid, record in lines:
        status, day, op = found[qid]
        if status == QuarantineStatus.OPEN:
            groups.setdefault((day, op), []).append((line_no, qid, record))
    reports = []
    for (day, op), rows in sorted(groups.items()):
        taps, errors = _records_to_taps(rows)
        sha = hashlib.sha256(data + f"\n#resubmit {day.isoformat()} {op}".encode()).hexdigest()
        reports.append(ingest_taps(engine, data_dir, taps, errors, file_sha256=sha,
                                   source_format="resubmit", source_name=path.name,
                                   service_day=day, operator=op, registry=registry,
                                   tariffs=tariffs,
                                   seal_key=seal_key, resolves=[qid for _, qid, _ in rows]))
    resubmitted = {qid for rows in groups.values() for _, qid, _ in rows}
    return ResubmitResult(tuple(reports), tuple(i for i in ids if i not in resubmitted))


Record = dict[str, object]  # one corrected record as its JSON line parsed it


def _corrections(data: bytes, name: str) -> list[tuple[int, int, Record]]:
    """(line index, quarantine id, record) of each non-empty line of a corrections file."""
    out = []
    for i, line in enumerate(data.decode("utf-8", errors="replace").splitlines()):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{name} line {i + 1}: not JSON ({exc.msg})",
                             code="INPUT_CORRUPT") from None
        if not (isinstance(obj, dict) and isinstance(obj.get("quarantine_id"), int)
                and isinstance(obj.get("record"), dict)):
            raise InputError(f"{name} line {i + 1}: needs an integer quarantine_id and a "
                             "record object (as tongka quarantine export writes them)",
                             code="INPUT_SCHEMA")
        out.append((i, obj["quarantine_id"], obj["record"]))
    return out


def _records_to_taps(rows: list[tuple[int, int, Record]]) -> tuple[pa.Table, list[RowError]]:
    """Validate corrected records one by one (few rows, at the edge: pydantic's job)."""
    good: list[TapRecord] = []
    source: list[int] = []
    errors: list[RowError] = []
    for line_no, _, record in rows:
        try:
            good.append(TapRecord.model_validate(record))
            source.append(line_no)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            errors.append(RowError("BAD_RECORD", line_no, where,
                                   f"{where}: {first['msg']}", record))
    table = taps_table(good).append_column(SOURCE_ROW, pa.array(source, pa.int64()))
    return table, errors
