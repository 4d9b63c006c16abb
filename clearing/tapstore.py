"""The tap store: accepted taps as immutable Parquet files, and the de-duplication key index.

Layout (ARCHITECTURE.md, Storage): ``<data_dir>/taps/day=YYYY-MM-DD/operator=NNN/<sha256>.parquet``,
one file per batch, named by the batch's SHA-256, holding the batch's accepted taps in file
order with ``TAP_SCHEMA``; beside it ``<sha256>.dup.parquet`` keeps the batch's duplicate rows
(with their position among the batch's candidates), so that re-acceptance after a withdrawal
(SPEC v1.2 §4) can reconsider them. Re-acceptance writes a batch's changed files under new
names (``<sha256>.w<id>.parquet``, ``id`` the withdrawn batch) and the old ones become strays.
A withdrawn batch's files are copied to ``<data_dir>/archive/`` (kept for audit, never read
by clearing). A file is written under a temporary name, fsynced and renamed, and
only then is the batch committed in SQL; a file that no committed batch names is an orphan of
a crash and is removed by the next ingestion that locks its day.

**The key index (SPEC §4 de-duplication).** A tap is a duplicate when an earlier accepted tap
has its device key ``(operator, device_id, device_seq)`` or its card key ``(issuer, card_id,
card_seq)``. The index is not a separate structure: it is the key columns of the stored tap
files of the days a duplicate can reach, read column-wise from Parquet (6 of 14 columns,
about 32 bytes a tap) a row group at a time. ``dedup`` builds exact hash tables over the
*batch's* keys (numba), streams the stored keys through them, then walks the batch in file
order; so memory follows the batch, and time follows the batch plus the reachable days
(about a second per ten million keys). Why this and not a SQL table of keys:

- cost never grows with the length of history, only with the days a duplicate can reach;
- a SQL key table would take 20 million index inserts for a day of 10 million taps, slower
  than the whole rest of ingestion, and would duplicate what the tap files already hold;
- the files are immutable and named by content, so the index needs no crash recovery of its
  own: a committed batch's file is its keys.

**Reach.** A batch declares one service day and every accepted tap lies in it (SPEC §4
rejects the rest), so a resent tap always meets its original in the same day. The reach also
covers ``DEDUP_REACH_DAYS`` neighbouring days on each side, so a key seen again just across
the 04:00 boundary (a QR code replayed at 04:01, a reader whose clock drifted) is still a
duplicate. A key repeated further apart than that is treated as a different tap; this bound
is what keeps de-duplication independent of history.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from numba import njit
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from clearing.batches import Batch, BatchStatus
from clearing.db import session_factory
from clearing.errors import StateError
from clearing.parquet_io import write_atomic
from clearing.read_ahead import read_ahead
from clearing.taps import FULL_TAP_SCHEMA, TAP_SCHEMA, with_optional_columns

TAPS_DIR = "taps"
ARCHIVE_DIR = "archive"
DUP_SUFFIX = ".dup.parquet"
DUP_POS = "candidate_pos"  # int64: a duplicate row's position among its batch's candidates

DEDUP_REACH_DAYS = 1  # neighbouring service days, each side, a duplicate key can reach
DEVICE_KEY = ("operator", "device_id", "device_seq")
CARD_KEY = ("issuer", "card_id", "card_seq")
KEY_COLUMNS = DEVICE_KEY + CARD_KEY

META_DAY = b"tongka.service_day"
META_OPERATOR = b"tongka.operator"
META_SHA = b"tongka.batch_sha256"
META_DAY_SEQ = b"tongka.day_seq"

# dedup() status of each batch row
NOT_CANDIDATE = 0  # rejected before de-duplication
ACCEPTED = 1
DUPLICATE = 2


# --------------------------------------------------------------------------- paths


def day_dir(data_dir: Path, day: dt.date) -> Path:
    return Path(data_dir) / TAPS_DIR / f"day={day.isoformat()}"


def batch_relpath(day: dt.date, operator: int, sha256: str, generation: str = "") -> str:
    """Where a batch's accepted taps live, relative to the data directory (stored in SQL).

    ``generation`` names a rewrite after a withdrawal, so the file it replaces stays intact
    until the commit (a crash leaves the old state, or the new one).
    """
    gen = f".{generation}" if generation else ""
    return f"{TAPS_DIR}/day={day.isoformat()}/operator={operator:03d}/{sha256}{gen}.parquet"


def dup_relpath(day: dt.date, operator: int, sha256: str, generation: str = "") -> str:
    """Where a batch's duplicate rows live, beside its accepted taps."""
    return batch_relpath(day, operator, sha256, generation).removesuffix(".parquet") + DUP_SUFFIX


def archive_relpath(relpath: str, batch_id: int) -> str:
    """Where a withdrawn batch's file is kept: the same layout under ``archive/``, and the
    batch id in the name (the same bytes can be submitted and withdrawn more than once)."""
    rel = relpath.removeprefix(f"{TAPS_DIR}/")
    head, _, name = rel.rpartition("/")
    return f"{ARCHIVE_DIR}/{head}/b{batch_id}-{name}"


# --------------------------------------------------------------------------- writing


def write_batch_taps(
    data_dir: Path, relpath: str, taps: pa.Table, metadata: dict[bytes, bytes]
) -> Path:
    """Write a batch's accepted taps crash-safely: temporary name, fsync, rename, fsync dir.

    Compressed with zstd; dictionary encoding only for the low-cardinality columns, where it
    pays (device ids, sequence numbers and card tokens are near-unique).
    """
    table = with_optional_columns(taps).replace_schema_metadata(metadata)
    return write_atomic(
        table,
        Path(data_dir) / relpath,
        use_dictionary=["operator", "issuer", "product", "media", "city", "line", "stop",
                        "tap_type", "debited_fen", "balance_fen"],
        row_group_size=1 << 20,
    )


def remove_strays(data_dir: Path, days: Iterable[dt.date], committed: set[str]) -> list[Path]:
    """Delete files under these days that no committed batch names: crash orphans, temp files.

    Only safe while the caller holds the lock on each of these days (``clearing.days``):
    every writer of a day holds it from before its temporary file until its commit.
    """
    removed = []
    root = Path(data_dir)
    for day in days:
        d = day_dir(root, day)
        if not d.is_dir():
            continue
        for f in sorted(d.glob("operator=*/*")):
            rel = f.relative_to(root).as_posix()
            if f.is_file() and rel not in committed:
                f.unlink(missing_ok=True)
                removed.append(f)
    return removed


def write_batch_dups(data_dir: Path, relpath: str, dups: pa.Table, positions: np.ndarray,
                     metadata: dict[bytes, bytes]) -> Path:
    """Write a batch's duplicate rows (with their candidate positions) crash-safely."""
    table = with_optional_columns(dups).append_column(
        DUP_POS, pa.array(np.asarray(positions, dtype=np.int64), pa.int64()))
    return write_atomic(table.replace_schema_metadata(metadata), Path(data_dir) / relpath)


# --------------------------------------------------------------------------- reading


def _committed_files(session: Session, days: Sequence[dt.date]) -> list[tuple[dt.date, int, str]]:
    """(day, day_seq, tap_path) of the live committed batches of ``days`` that stored taps.

    A withdrawn batch's taps left its day (SPEC v1.2 §4): it is never read again.
    """
    rows = session.execute(
        select(Batch.service_day, Batch.day_seq, Batch.tap_path)
        .where(Batch.service_day.in_(list(days)), Batch.tap_path.is_not(None),
               Batch.status != BatchStatus.WITHDRAWN)
        .order_by(Batch.service_day, Batch.day_seq)
    ).all()
    return [(r[0], r[1], str(r[2])) for r in rows]


def committed_paths(session: Session, days: Sequence[dt.date]) -> set[str]:
    """The files of ``days`` that live committed batches name: taps and kept duplicates."""
    dups = session.scalars(
        select(Batch.dup_path)
        .where(Batch.service_day.in_(list(days)), Batch.dup_path.is_not(None),
               Batch.status != BatchStatus.WITHDRAWN))
    return {rel for _, _, rel in _committed_files(session, days)} | {str(d) for d in dups}


def batch_candidates(data_dir: Path, tap_path: str | None, dup_path: str | None
                     ) -> tuple[pa.Table, np.ndarray]:
    """A batch's candidates (rows that passed the checks) in file order, and which were
    accepted: its accepted taps merged with its kept duplicates by their positions."""
    root = Path(data_dir)
    acc = with_optional_columns(_read(root / tap_path) if tap_path else
                                TAP_SCHEMA.empty_table())
    if not dup_path:
        return acc, np.ones(acc.num_rows, dtype=bool)
    dup = _read(root / dup_path)
    pos = np.asarray(dup.column(DUP_POS).to_numpy(), dtype=np.int64)
    total = acc.num_rows + dup.num_rows
    is_dup = np.zeros(total, dtype=bool)
    is_dup[pos] = True
    order = np.empty(total, dtype=np.int64)
    order[~is_dup] = np.arange(acc.num_rows)
    order[is_dup] = acc.num_rows + np.arange(dup.num_rows)
    both = pa.concat_tables([acc, with_optional_columns(dup)])
    return both.take(pa.array(order)), ~is_dup


def _read(path: Path, columns: Sequence[str] | None = None) -> pa.Table:
    if not path.is_file():
        raise StateError(
            f"{path}: a committed batch's tap file is missing from the data directory; restore "
            "it from backup (the database says it was stored)", code="TAPSTORE_MISSING")
    table = pq.read_table(path, columns=list(columns) if columns else None)
    return table.replace_schema_metadata(None)


def day_files_on_disk(data_dir: Path, day: dt.date) -> list[Path]:
    """A day's tap files on disk in the order their metadata records (no database at hand);
    kept duplicates are not taps of the day and are left out."""
    found = []
    for f in day_dir(Path(data_dir), day).glob("operator=*/*.parquet"):
        if f.name.endswith(DUP_SUFFIX):
            continue
        meta = pq.read_schema(f).metadata or {}
        found.append((int(meta.get(META_DAY_SEQ, b"0")), f.name, f))
    return [f for _, _, f in sorted(found)]


def day_tap_paths(data_dir: Path, day: dt.date, engine: Engine | None = None) -> list[Path]:
    """The files ``read_day_taps`` reads for ``day``, in acceptance order: the live committed
    batches' files (with a database), else the files on disk in their recorded order."""
    root = Path(data_dir)
    if engine is None:
        return day_files_on_disk(root, day)
    with session_factory(engine)() as session:
        return [root / rel for _, _, rel in _committed_files(session, [day])]


def read_tap_file(path: Path, columns: Sequence[str] | None = None) -> pa.Table:
    """A stored tap file (those columns of it); a missing file is ``TAPSTORE_MISSING``."""
    return _read(path, columns)


def read_stored_rows(files: Sequence[tuple[Path, int]], rows: np.ndarray,
                     columns: Sequence[str]) -> dict[str, np.ndarray]:
    """Some rows of a day's stored taps, ``files`` being (file, its rows) in acceptance order
    and ``rows`` counted across them: the columns' values in the order of ``rows``, in their
    stored types. Only the row groups holding them are decoded (a few rows of ten million)."""
    if not columns:
        return {}
    rows = np.asarray(rows, np.int64)
    ends = np.cumsum([0, *(n for _, n in files)])
    if len(rows) and (int(rows.min()) < 0 or int(rows.max()) >= int(ends[-1])):
        raise ValueError(f"rows outside the day's {int(ends[-1])} stored taps")
    which = np.searchsorted(ends, rows, side="right") - 1
    out: dict[str, np.ndarray] = {}
    for k in np.unique(which).tolist():
        at = np.flatnonzero(which == k)
        local = rows[at] - int(ends[k])
        path = files[k][0]
        if not path.is_file():
            _read(path)  # raises TAPSTORE_MISSING
        stored = pq.ParquetFile(path)
        meta = stored.metadata
        starts = np.cumsum([0] + [meta.row_group(g).num_rows for g in range(meta.num_row_groups)])
        group = np.searchsorted(starts, local, side="right") - 1
        for g in np.unique(group).tolist():
            sel = np.flatnonzero(group == g)
            table = with_optional_columns(stored.read_row_group(g)) if any(
                c not in stored.schema_arrow.names for c in columns
            ) else stored.read_row_group(g, columns=list(columns))
            take = pa.array(local[sel] - starts[g])
            for c in columns:
                values = np.asarray(table.column(c).take(take).to_numpy())
                if c not in out:
                    out[c] = np.zeros(len(rows), values.dtype)
                out[c][at[sel]] = values
    for c in columns:  # no rows asked: empty columns of the stored types
        if c not in out:
            out[c] = np.zeros(0, FULL_TAP_SCHEMA.field(c).type.to_pandas_dtype())
    return out


def read_day_taps(data_dir: Path, day: dt.date, engine: Engine | None = None, *,
                  optional: bool = False) -> pa.Table:
    """A service day's accepted taps, every operator, in acceptance order (SPEC §4).

    ``TAP_SCHEMA`` columns, which is all pricing reads; ``optional=True`` adds the optional
    columns of ``FULL_TAP_SCHEMA`` (``balance_fen``, for risk signals), -1 for files stored
    before v1.2 (SPEC v1.2 §3).

    Acceptance order is batches in the order they were stored, rows in file order. With an
    ``engine`` the committed batches in SQL say which files belong to the day (the
    authoritative answer); without one, the files on disk are read in the order recorded in
    their metadata, which includes the orphan of a crash until the next ingestion removes it.
    """
    paths = day_tap_paths(data_dir, day, engine)
    # files stored before v1.2 have no balance_fen: they read as -1 (SPEC v1.2 §3)
    tables = [with_optional_columns(_read(p)) for p in paths]
    schema = FULL_TAP_SCHEMA if optional else TAP_SCHEMA
    if not tables:
        return schema.empty_table()
    # chunks stay as the files' row groups: the fast path reads chunk by chunk, no copy
    return pa.concat_tables(tables).select(schema.names)


def iter_keys(data_dir: Path, session: Session, days: Sequence[dt.date],
              chunk_rows: int = 1 << 20) -> Iterator[pa.RecordBatch]:
    """The de-duplication keys of every committed tap of ``days``, a chunk at a time.

    Only the six key columns are decoded, one row group at a time, so memory does not grow
    with the number of stored taps.
    """
    root = Path(data_dir)
    for _, _, rel in _committed_files(session, days):
        path = root / rel
        if not path.is_file():
            _read(path)  # raises TAPSTORE_MISSING
        yield from pq.ParquetFile(path).iter_batches(batch_size=chunk_rows,
                                                     columns=list(KEY_COLUMNS))


def _committed_batches(session: Session, days: Sequence[dt.date]
                       ) -> tuple[dict[dt.date, set[tuple[int, str]]], dict[int, int]]:
    """Per day, (batch id, tap_path) of its live committed batches that stored taps; and each
    one's accepted count (a size hint only: the files are what is read)."""
    out: dict[dt.date, set[tuple[int, str]]] = {day: set() for day in days}
    accepted: dict[int, int] = {}
    rows = session.execute(
        select(Batch.service_day, Batch.id, Batch.tap_path, Batch.accepted)
        .where(Batch.service_day.in_(list(days)), Batch.tap_path.is_not(None),
               Batch.status != BatchStatus.WITHDRAWN))
    for day, batch_id, rel, count in rows:
        out[day].add((int(batch_id), str(rel)))
        accepted[int(batch_id)] = max(0, int(count or 0))
    return out, accepted


# --------------------------------------------------------------------------- the call's key index


MAX_INDEX_KEYS = 3 << 24  # a KeyIndex holds at most this many keys (about 1.3 GB), then streams
INDEX_LOAD = 0.6  # the tables' fill: linear probing stays about two slots a probe
MIN_INDEX_KEYS = 1 << 10  # the smallest tables (KeyIndex(min_keys=...): tests make them grow)
FULL_HASH = (1 << 64) - 1  # KeyIndex(hash_mask=...): tests truncate the hash to force collisions
VERIFY_CACHE_ROWS = 1 << 22  # stored key rows kept for exact checks (32 bytes each)
_LOW = np.uint64(0xFFFFFFFF)
_T = TypeVar("_T")


class _IndexFull(Exception):
    """The stored keys of the days touched do not fit ``MAX_INDEX_KEYS``."""


class _Grow(Exception):
    """More stored keys than the tables were sized for: rebuild them bigger."""


class KeyIndex:
    """The stored de-duplication keys of the days one ingestion call touches (SPEC §4).

    Scoped to one call (``tongka ingest`` of many files), never to a process: a stored file's
    name is its batch's hash but its content depends on what was stored before it, so keys are
    only trusted for the (batch id, tap path) they were read for. Each batch's ``refresh``
    runs inside its transaction, after the lock on every day of its window is taken: it asks
    SQL which batches each day holds *now*, reads the files of batches committed since (by
    another process too: no commit to a day can happen while its lock is held), and starts
    afresh when a batch it holds is gone (withdrawn or rewritten). ``add`` registers a batch's
    accepted keys once its transaction has committed. So a day's keys are decoded once per
    call instead of once per batch, and a batch probes its own keys into the index (time
    follows the batch) instead of streaming every stored key through its own.

    **Fingerprints, then an exact check.** The index keeps no key: per stored tap and key kind
    (device, card) one 8-byte slot of an open-addressing table holds the high 32 bits of the
    key's 64-bit hash (the low 32 bits chose the slot) and the tap's location (which stored
    file, which row). A probe that finds a slot with its fingerprint, on a file of a day in
    its window, is only a candidate: its key is compared with the stored file's row (read
    under the same day locks; the rows of the files a call checks stay cached up to
    ``VERIFY_CACHE_ROWS``). Candidates are the real duplicates across batches (under 1 % of
    taps) and, rarely, a fingerprint collision, so the answer is exact whatever the hash does
    (``hash_mask`` truncates it, for tests). Memory: 2 x 8 bytes / ``INDEX_LOAD`` per stored
    key (about 27 bytes), sized once from the stored counts in SQL and ``expect_rows`` (the
    call's own rows, from the batches' footers), so the tables never double; a table that
    turns out too small is rebuilt from the files. Past ``max_keys`` keys the index gives up
    for the rest of the call (``refresh`` returns False) and the caller streams the stored keys
    as without one.
    """

    def __init__(self, data_dir: Path, *, max_keys: int = MAX_INDEX_KEYS, expect_rows: int = 0,
                 hash_mask: int = FULL_HASH, min_keys: int = MIN_INDEX_KEYS) -> None:
        self.data_dir = Path(data_dir)
        self.max_keys = max_keys
        self.min_keys = min_keys
        self.enabled = True
        self.mask = np.uint64(hash_mask)
        self._expect = max(0, int(expect_rows))  # the call's rows not added yet (a size hint)
        self._capacity_hint = 0
        self._clear()

    def _clear(self) -> None:
        self._batches: dict[dt.date, set[tuple[int, str]]] = {}
        self._files: list[tuple[int, str]] = []  # (day ordinal, tap path) of each file read
        self._starts: list[int] = []  # each file's first location
        self._n = 0  # locations used
        self._capacity = 0
        self._tables = (np.zeros(0, np.uint64), np.zeros(0, np.uint64))  # device, card
        self._cache: dict[int, dict[str, np.ndarray]] = {}  # file -> its key columns

    def _give_up(self) -> bool:
        self.enabled = False
        self._clear()  # frees the memory
        return False

    def _allocate(self, keys: int) -> None:
        """Empty tables for ``keys`` keys (the caller cleared the index)."""
        keys = min(max(keys, self._capacity_hint, self.min_keys, 1), max(self.max_keys, 1))
        size = int(keys / INDEX_LOAD) + 2
        self._tables = (np.zeros(size, np.uint64), np.zeros(size, np.uint64))
        self._capacity = keys

    def _start_file(self, day: int, rel: str, rows: int) -> None:
        """Register the next stored file, of ``rows`` keys; its chunks follow (``_insert``)."""
        if self._n + rows > self.max_keys:
            raise _IndexFull
        if self._n + rows > self._capacity:
            raise _Grow
        self._files.append((day, rel))
        self._starts.append(self._n)

    def _insert(self, keys: pa.Table | pa.RecordBatch, take: np.ndarray | None = None) -> None:
        """The next keys of the current file: ``keys``' rows (where ``take``), in order."""
        rows = np.ones(keys.num_rows, np.bool_) if take is None else take

        def insert(kind: int) -> int:
            names = (DEVICE_KEY, CARD_KEY)[kind]
            return int(_fp_insert_kernel(self._tables[kind], (DEVICE_SEED, CARD_SEED)[kind],  # type: ignore[call-arg]
                                         self.mask, *(_np(keys, k) for k in names), rows,
                                         self._n))

        end, _ = _pair(lambda: insert(0), lambda: insert(1), keys.num_rows)
        self._n = end

    def _new(self, batches: dict[dt.date, set[tuple[int, str]]]
             ) -> list[tuple[dt.date, int, str]]:
        return [(day, batch_id, rel) for day, committed in sorted(batches.items())
                for batch_id, rel in sorted(committed - self._batches.get(day, set()))]

    def refresh(self, session: Session, days: Sequence[dt.date]) -> bool:
        """Bring ``days`` up to date with SQL; the caller holds the lock on each of them.
        False when the index is (or now gets) too big: the caller streams instead."""
        if not self.enabled:
            return False
        batches, accepted = _committed_batches(session, days)
        if any(not held <= batches.get(day, held) for day, held in self._batches.items()):
            self._clear()  # a batch it holds left its day: read the days again
        try:
            for _ in range(4):
                new = self._new(batches)
                more = sum(accepted.get(b, 0) for _, b, _ in new)
                if self._n + more > self.max_keys:
                    return self._give_up()
                if self._capacity == 0 or self._n + more > self._capacity:
                    # first use, or too small: sized for the stored keys and the call's rows
                    grown = 2 * self._capacity
                    self._clear()
                    new = self._new(batches)
                    self._allocate(max(grown, self._expect + sum(
                        accepted.get(b, 0) for _, b, _ in new)))
                try:
                    self._read(new)
                    for day in days:
                        self._batches.setdefault(day, set())  # held, if with no file
                    return True
                except _Grow:  # the SQL counts were short: rebuild bigger
                    self._capacity_hint = 2 * self._capacity
                    self._clear()
            return self._give_up()
        except _IndexFull:
            return self._give_up()
        except BaseException:
            self._clear()  # half-read: never trusted
            raise

    def _read(self, new: list[tuple[dt.date, int, str]]) -> None:
        """Read these committed batches' key columns, a row group ahead on a second thread
        (pyarrow and the numba kernels both release the GIL)."""
        for day, _, _ in new:
            self._batches.setdefault(day, set())
        chunks = _read_ahead([self.data_dir / rel for _, _, rel in new])
        current = -1
        try:
            for i, rows, keys in chunks:
                if i != current:  # the next file (every file yields at least one chunk)
                    day, batch_id, rel = new[i]
                    self._start_file(day.toordinal(), rel, rows)
                    self._batches[day].add((batch_id, rel))
                    current = i
                self._insert(keys)
        finally:
            chunks.close()

    def add(self, day: dt.date, batch_id: int, rel: str, keys: pa.Table | pa.RecordBatch,
            accepted: np.ndarray | None = None) -> None:
        """Register a committed batch's accepted taps: the rows of ``keys`` (its key columns at
        least) where ``accepted``, all of them without it, in the order they were stored."""
        rows = keys.num_rows if accepted is None else int(np.count_nonzero(accepted))
        self._expect = max(0, self._expect - rows)
        held = self._batches.get(day)
        if held is None:
            return  # the day is read from its files when a batch next needs it
        try:
            self._start_file(day.toordinal(), rel, rows)
            self._insert(keys, None if accepted is None else np.ascontiguousarray(accepted,
                                                                                  np.bool_))
            held.add((batch_id, rel))
        except _IndexFull:
            self._give_up()
        except _Grow:
            self._capacity_hint = 2 * self._capacity
            self._clear()  # the next refresh reads the days again, into bigger tables
        except BaseException:
            self._clear()
            raise

    def hits(self, days: Sequence[dt.date], batch: pa.Table | pa.RecordBatch
             ) -> tuple[np.ndarray, np.ndarray]:
        """Per batch row: whether a stored tap of ``days`` (consecutive, all refreshed) has its
        device key, its card key."""
        lo, hi = min(days).toordinal(), max(days).toordinal()
        assert all(day in self._batches for day in days) and hi - lo + 1 == len(set(days))
        starts = np.array(self._starts, dtype=np.int64)
        file_days = np.array([d for d, _ in self._files], dtype=np.int64)
        if self._n == 0:
            return (np.zeros(batch.num_rows, dtype=np.bool_),
                    np.zeros(batch.num_rows, dtype=np.bool_))
        cols = [[_np(batch, k) for k in names] for names in (DEVICE_KEY, CARD_KEY)]

        def probe(kind: int) -> tuple[np.ndarray, np.ndarray]:
            return _fp_probe_kernel(self._tables[kind], (DEVICE_SEED, CARD_SEED)[kind],  # type: ignore[no-any-return, call-arg]
                                    self.mask, *cols[kind], starts, file_days, lo, hi)

        candidates = _pair(lambda: probe(0), lambda: probe(1), batch.num_rows)
        # the exact checks read stored files (one cache): one kind after the other
        out = [self._verify(query, loc, starts, names, kind_cols, batch.num_rows)
               for (query, loc), names, kind_cols
               in zip(candidates, (DEVICE_KEY, CARD_KEY), cols, strict=True)]
        return out[0], out[1]

    def _verify(self, query: np.ndarray, loc: np.ndarray, starts: np.ndarray,
                names: Sequence[str], cols: Sequence[np.ndarray], n: int) -> np.ndarray:
        """The exact check of fingerprint candidates: query row ``query[i]`` has the key of
        the stored tap at location ``loc[i]``; found per query row."""
        found = np.zeros(n, dtype=np.bool_)
        if len(query) == 0:
            return found
        file_of = np.searchsorted(starts, loc, side="right") - 1
        for f in np.unique(file_of).tolist():
            sel = file_of == f
            stored = self._file_keys(f)
            rows, q = loc[sel] - starts[f], query[sel]
            same = np.ones(len(q), dtype=np.bool_)
            for name, col in zip(names, cols, strict=True):
                same &= stored[name][rows] == col[q]
            found[q[same]] = True
        return found

    def _file_keys(self, f: int) -> dict[str, np.ndarray]:
        """The key columns of the index's file ``f`` (cached for the call, least recent out)."""
        hit = self._cache.pop(f, None)
        if hit is None:
            table = _read(self.data_dir / self._files[f][1], KEY_COLUMNS)
            hit = {k: _np(table, k) for k in KEY_COLUMNS}
            rows = sum(len(v[KEY_COLUMNS[0]]) for v in self._cache.values())
            while self._cache and rows + table.num_rows > VERIFY_CACHE_ROWS:
                oldest = next(iter(self._cache))
                rows -= len(self._cache.pop(oldest)[KEY_COLUMNS[0]])
        self._cache[f] = hit
        return hit


READ_AHEAD = 2  # row groups decoded and waiting for the kernels: memory stays a few of them


def _row_groups(paths: Sequence[Path]) -> Iterator[tuple[int, int, pa.Table]]:
    """(file index, the file's rows, the key columns of one row group) of each row group in
    turn; a file of no rows yields one empty group, so every file is seen."""
    for i, path in enumerate(paths):
        if not path.is_file():
            _read(path)  # raises TAPSTORE_MISSING
        pf = pq.ParquetFile(path)
        rows = pf.metadata.num_rows
        if pf.num_row_groups == 0:
            yield i, rows, pa.table({k: pa.array([], TAP_SCHEMA.field(k).type)
                                     for k in KEY_COLUMNS})
        for g in range(pf.num_row_groups):
            yield i, rows, pf.read_row_group(g, columns=list(KEY_COLUMNS)).combine_chunks()


def _read_ahead(paths: Sequence[Path]) -> Generator[tuple[int, int, pa.Table], None, None]:
    """``_row_groups`` decoded on a second thread while the caller hashes the previous ones
    (at most ``READ_AHEAD`` waiting; a reader's error, ``TAPSTORE_MISSING`` too, is raised
    here)."""
    return read_ahead(_row_groups(paths), depth=READ_AHEAD, name="tapstore-keys")


# --------------------------------------------------------------------------- de-duplication


PAIR_MIN_ROWS = 1 << 16  # below this a second thread costs more than it saves


def _pair(device: Callable[[], _T], card: Callable[[], _T], rows: int) -> tuple[_T, _T]:
    """``(device(), card())``: the two key kinds' kernels are independent (their own tables)
    and release the GIL, so a big batch runs the card kernel on a second thread."""
    if rows < PAIR_MIN_ROWS:
        return device(), card()
    out: list[_T] = []
    error: list[BaseException] = []

    def run() -> None:
        try:
            out.append(card())
        except BaseException as exc:  # handed to the caller
            error.append(exc)

    thread = threading.Thread(target=run, name="tapstore-card-keys", daemon=True)
    thread.start()
    try:
        first = device()
    finally:
        thread.join()
    if error:
        raise error[0]
    return first, out[0]


def _np(data: pa.Table | pa.RecordBatch, name: str) -> np.ndarray:
    return np.ascontiguousarray(data.column(name).to_numpy())


def warm_up() -> None:
    """Compile (or load from numba's cache) the de-duplication kernels ahead of first use."""
    keys = pa.table({k: pa.array([1], TAP_SCHEMA.field(k).type) for k in KEY_COLUMNS})
    dedup([keys], keys, np.ones(1, dtype=bool))
    table = np.zeros(4, np.uint64)
    one = np.zeros(1, np.int64)
    for seed, names in ((DEVICE_SEED, DEVICE_KEY), (CARD_SEED, CARD_KEY)):
        cols = [_np(keys, k) for k in names]
        _fp_insert_kernel(table, seed, np.uint64(FULL_HASH), *cols, np.ones(1, np.bool_), 0)  # type: ignore[call-arg]
        _fp_probe_kernel(table, seed, np.uint64(FULL_HASH), *cols, one, one, 0, 0)  # type: ignore[call-arg]
        table[:] = 0


def dedup(stored: Iterable[pa.Table | pa.RecordBatch], batch: pa.Table,
          candidate: np.ndarray, *,
          stored_hits: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """SPEC §4 de-duplication of a batch against stored taps and itself, in file order.

    ``stored`` yields the keys of previously accepted taps (any number of chunks), ``batch``
    has the batch's rows (key columns at least), ``candidate`` marks the rows that passed the
    acceptance checks. Returns per batch row ``ACCEPTED``, ``DUPLICATE`` or
    ``NOT_CANDIDATE``: a candidate is a duplicate when a stored tap, or an earlier accepted
    row of the batch, has its device key or its card key; only accepted rows register keys,
    so a duplicate blocks nothing.

    Three passes, all O(rows): (1) hash tables over the batch's own keys give each
    candidate the first candidate row with the same device key and the same card key (its
    key groups); (2) stored keys stream through those tables and mark the groups they hit,
    so memory is the batch's, whatever the number of stored taps; (3) candidates in file
    order: a row whose groups are marked is a duplicate, otherwise it is accepted and marks
    them.

    ``stored_hits`` (from ``KeyIndex.hits``), instead of streaming ``stored``: per batch row,
    whether a stored tap has its device key, its card key; a row's group is hit when it is.
    """
    candidate = np.ascontiguousarray(candidate, dtype=np.bool_)
    if batch.num_rows == 0:
        return np.zeros(0, dtype=np.int8)
    d = [_np(batch, c) for c in DEVICE_KEY]
    c = [_np(batch, c) for c in CARD_KEY]
    (dtab, dgroup), (ctab, cgroup) = _pair(
        lambda: group_kernel(d[0], d[1], d[2], candidate, DEVICE_SEED),
        lambda: group_kernel(c[0], c[1], c[2], candidate, CARD_SEED), batch.num_rows)
    dhit = np.zeros(batch.num_rows, dtype=np.bool_)
    chit = np.zeros(batch.num_rows, dtype=np.bool_)
    if stored_hits is not None:
        dhit[dgroup[candidate & stored_hits[0]]] = True
        chit[cgroup[candidate & stored_hits[1]]] = True
        stored = ()
    for chunk in stored:
        if chunk.num_rows:
            g = probe_groups(dtab, d[0], d[1], d[2], *(_np(chunk, k) for k in DEVICE_KEY),  # type: ignore[call-arg]
                             DEVICE_SEED)
            dhit[g[g >= 0]] = True
            g = probe_groups(ctab, c[0], c[1], c[2], *(_np(chunk, k) for k in CARD_KEY),  # type: ignore[call-arg]
                             CARD_SEED)
            chit[g[g >= 0]] = True
    decided: np.ndarray = _decide_kernel(candidate, dgroup, cgroup, dhit, chit)
    return decided


# Key hashing shared with the risk signals (clearing.risk, risk_kernels, risk_digest), which
# probe and group card and device keys the way de-duplication does.
DEVICE_SEED = np.uint64(0x9E3779B97F4A7C15)
CARD_SEED = np.uint64(0x6A09E667F3BCC909)


@njit(inline="always")
def mix_hash(h: np.uint64, x: np.uint64) -> np.uint64:  # pragma: no cover - compiled
    # splitmix64 finaliser over each key field: spreads sequential ids across the table.
    h ^= x
    h *= np.uint64(0xBF58476D1CE4E5B9)
    h ^= h >> np.uint64(31)
    h *= np.uint64(0x94D049BB133111EB)
    h ^= h >> np.uint64(29)
    return h


@njit(inline="always")
def _hash(seed, a, b, c):  # type: ignore[no-untyped-def]  # pragma: no cover - compiled
    return mix_hash(mix_hash(mix_hash(seed, np.uint64(a)), np.uint64(b)), np.uint64(c))


@njit(cache=True, nogil=True)
def group_kernel(k0, k1, k2, candidate, seed):  # type: ignore[no-untyped-def]  # pragma: no cover
    """Open addressing (load <= 1/2) over the candidates' keys; a probe compares the full
    key, so groups are exact whatever the hash does. Returns the table (row indices, -1
    empty) and, per candidate, the first candidate row with the same key."""
    n = len(k0)
    size = 2
    while size < 2 * n + 2:
        size <<= 1
    mask = np.uint64(size - 1)
    table = np.full(size, -1, np.int32)  # row indices; batches are far below 2**31 rows
    group = np.full(n, -1, np.int32)
    for i in range(n):
        if not candidate[i]:
            continue
        slot = _hash(seed, k0[i], k1[i], k2[i]) & mask
        while True:
            j = table[slot]
            if j < 0:
                table[slot] = i
                group[i] = i
                break
            if k0[j] == k0[i] and k1[j] == k1[i] and k2[j] == k2[i]:
                group[i] = j
                break
            slot = (slot + np.uint64(1)) & mask
    return table, group


@njit(cache=True, nogil=True)
def probe_groups(table, k0, k1, k2, s0, s1, s2, seed):  # type: ignore[no-untyped-def]  # pragma: no cover
    """Per stored key (s0, s1, s2), the key group of ``table`` it hits, -1 for none.

    Shared by de-duplication (which groups a stored key blocks) and the replay signal (which
    of the day's taps an earlier day's key repeats): one probe of the one hash table.
    """
    out = np.full(len(s0), -1, np.int64)
    for i in range(len(s0)):
        out[i] = probe_key(table, k0, k1, k2, seed, s0[i], s1[i], s2[i])
    return out


@njit(cache=True, nogil=True, inline="always")
def probe_key(table, k0, k1, k2, seed, a, b, c):  # type: ignore[no-untyped-def]  # pragma: no cover
    """The key group of ``table`` that the key (a, b, c) hits, -1 for none: the one probe of
    the open-addressing table ``group_kernel`` builds (de-duplication and replay use it)."""
    mask = np.uint64(len(table) - 1)
    slot = _hash(seed, a, b, c) & mask
    while True:
        j = table[slot]
        if j < 0:
            return -1
        if k0[j] == a and k1[j] == b and k2[j] == c:
            return j
        slot = (slot + np.uint64(1)) & mask


# The fingerprint tables are far bigger than the caches (a 15M day: 200 MB each), so a key
# inserted or probed in row order is a cache and TLB miss every time. The kernels take the
# keys a chunk at a time, bucket them by the region of the table their home slot lies in
# (a counting sort), and visit the regions in address order: the same slots, the same
# results, memory walked forwards. Per chunk: 4 arrays of 8 bytes a key.
_SORT_CHUNK = 1 << 20
_REGIONS = 1 << 12


@njit(cache=True, nogil=True, inline="always")
def _region(slot, size):  # type: ignore[no-untyped-def]  # pragma: no cover - compiled
    return np.int64((slot * np.uint64(_REGIONS)) // size)


@njit(cache=True, nogil=True)
def _fp_insert_kernel(table, seed, mask, k0, k1, k2, take, loc):  # type: ignore[no-untyped-def]  # pragma: no cover
    """Insert the keys of the rows where ``take`` as consecutive locations from ``loc``.

    A slot is 0 (empty) or (high 32 bits of the hash) << 32 | (location + 1); the low 32 bits
    of the hash choose the home slot (multiply-shift: any table size). The caller keeps the
    table below ``INDEX_LOAD`` full, so there always is an empty slot. Keys are inserted a
    chunk at a time in the order of their home slots' regions (the table's layout depends on
    the order; what a probe finds does not).
    """
    size = np.uint64(len(table))
    n = len(k0)
    chunk = min(n, _SORT_CHUNK)
    home = np.empty(chunk, np.uint64)
    entry = np.empty(chunk, np.uint64)
    by_home = np.empty(chunk, np.uint64)
    by_entry = np.empty(chunk, np.uint64)
    start = np.empty(_REGIONS + 1, np.int64)
    for lo in range(0, n, _SORT_CHUNK):
        hi = min(n, lo + _SORT_CHUNK)
        start[:] = 0
        m = 0
        for i in range(lo, hi):
            if not take[i]:
                continue
            h = _hash(seed, k0[i], k1[i], k2[i]) & mask
            slot = ((h & _LOW) * size) >> np.uint64(32)
            home[m] = slot
            entry[m] = ((h >> np.uint64(32)) << np.uint64(32)) | np.uint64(loc + 1)
            start[_region(slot, size) + 1] += 1
            loc += 1
            m += 1
        for r in range(_REGIONS):
            start[r + 1] += start[r]
        for j in range(m):
            r = _region(home[j], size)
            by_home[start[r]] = home[j]
            by_entry[start[r]] = entry[j]
            start[r] += 1
        for j in range(m):
            slot = by_home[j]
            while table[slot] != 0:
                slot += np.uint64(1)
                if slot == size:
                    slot = np.uint64(0)
            table[slot] = by_entry[j]
    return loc


@njit(cache=True, nogil=True)
def _fp_probe_kernel(table, seed, mask, k0, k1, k2, starts, file_days, lo, hi):  # type: ignore[no-untyped-def]  # pragma: no cover
    """The candidates of each key of (k0, k1, k2): (key row, stored location) of every slot
    with its fingerprint whose file (``starts``: each file's first location, ascending) lies
    on a day from ``lo`` to ``hi``. Only candidates: ``KeyIndex._verify`` compares keys.
    Probed a chunk at a time in the order of the home slots' regions (as ``_fp_insert_kernel``);
    the candidates come in that order."""
    size = np.uint64(len(table))
    n = len(k0)
    query = np.empty(1024, np.int64)
    where = np.empty(1024, np.int64)
    m = 0
    chunk = min(n, _SORT_CHUNK)
    home = np.empty(chunk, np.uint64)
    by_hash = np.empty(chunk, np.uint64)
    by_row = np.empty(chunk, np.int64)
    hashes = np.empty(chunk, np.uint64)
    start = np.empty(_REGIONS + 1, np.int64)
    for c0 in range(0, n, _SORT_CHUNK):
        c1 = min(n, c0 + _SORT_CHUNK)
        start[:] = 0
        for i in range(c0, c1):
            h = _hash(seed, k0[i], k1[i], k2[i]) & mask
            hashes[i - c0] = h
            home[i - c0] = ((h & _LOW) * size) >> np.uint64(32)
            start[_region(home[i - c0], size) + 1] += 1
        for r in range(_REGIONS):
            start[r + 1] += start[r]
        for j in range(c1 - c0):
            r = _region(home[j], size)
            by_hash[start[r]] = hashes[j]
            by_row[start[r]] = c0 + j
            start[r] += 1
        for j in range(c1 - c0):
            h = by_hash[j]
            i = by_row[j]
            tag = h >> np.uint64(32)
            slot = ((h & _LOW) * size) >> np.uint64(32)
            while True:
                v = table[slot]
                if v == 0:
                    break
                if v >> np.uint64(32) == tag:
                    loc = np.int64(v & _LOW) - 1
                    a, b = 0, len(starts)  # the file: the last start <= loc
                    while b - a > 1:
                        mid = (a + b) // 2
                        if starts[mid] <= loc:
                            a = mid
                        else:
                            b = mid
                    if lo <= file_days[a] <= hi:
                        if m == len(query):
                            query = np.concatenate((query, np.empty(m, np.int64)))
                            where = np.concatenate((where, np.empty(m, np.int64)))
                        query[m] = i
                        where[m] = loc
                        m += 1
                slot += np.uint64(1)
                if slot == size:
                    slot = np.uint64(0)
    return query[:m], where[:m]


@njit(cache=True, nogil=True)
def _decide_kernel(candidate, dgroup, cgroup, dhit, chit):  # type: ignore[no-untyped-def]  # pragma: no cover
    """File order: blocked groups make duplicates; an accepted row blocks its groups."""
    out = np.zeros(len(candidate), np.int8)
    for i in range(len(candidate)):
        if not candidate[i]:
            continue
        dg = dgroup[i]
        cg = cgroup[i]
        if dhit[dg] or chit[cg]:
            out[i] = 2  # DUPLICATE
        else:
            dhit[dg] = True
            chit[cg] = True
            out[i] = 1  # ACCEPTED
    return out
