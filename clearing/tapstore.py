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
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

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
    root = Path(data_dir)
    if engine is not None:
        with session_factory(engine)() as session:
            paths = [root / rel for _, _, rel in _committed_files(session, [day])]
    else:
        paths = day_files_on_disk(root, day)
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


MAX_INDEX_KEYS = 1 << 23  # a KeyIndex holds at most this many keys (about 0.6 GB), then streams


class _IndexFull(Exception):
    """The stored keys of the days touched do not fit ``MAX_INDEX_KEYS``."""


class _KeySet:
    """An exact hash set of (3-field key, day) that grows: keys and days in arrays, and an
    open-addressing table (load <= 1/2) over them, hashed by the key alone, so one probe
    sequence answers "is this key stored on any day from lo to hi". A slot holds 31 bits of
    the key's hash and the entry's index, so a probe that misses (most do) reads one slot,
    not the key arrays. An entry already in the set is not added again."""

    def __init__(self, dtypes: Sequence[np.dtype], seed: np.uint64, limit: int) -> None:
        self.seed = seed
        self.limit = limit
        self.n = 0
        self.keys = [np.empty(0, dtype=t) for t in dtypes]
        self.days = np.empty(0, dtype=np.int32)
        self.table = np.full(2, -1, np.int64)

    def reserve(self, need: int) -> None:
        """Room for ``need`` entries in all (grown by doubling: adding is amortised O(1))."""
        if need <= len(self.days):
            return
        if need > self.limit:
            raise _IndexFull
        cap = max(1 << 16, len(self.days))
        while cap < need:
            cap <<= 1
        cap = min(cap, max(need, self.limit))
        self.keys = [np.concatenate([k[:self.n], np.empty(cap - self.n, k.dtype)])
                     for k in self.keys]
        self.days = np.concatenate([self.days[:self.n], np.empty(cap - self.n, np.int32)])
        size = 2
        while size < 2 * cap:
            size <<= 1
        self.table = _set_rehash_kernel(size, self.keys[0], self.keys[1], self.keys[2], self.n,
                                        self.seed)

    def add(self, day: int, k0: np.ndarray, k1: np.ndarray, k2: np.ndarray) -> None:
        self.reserve(self.n + len(k0))
        self.n = _set_insert_kernel(self.table, self.keys[0], self.keys[1], self.keys[2],
                                    self.days, self.n, self.seed, day, k0, k1, k2)

    def contains(self, lo: int, hi: int, k0: np.ndarray, k1: np.ndarray, k2: np.ndarray
                 ) -> np.ndarray:
        """Per key, whether it is stored on a day from ``lo`` to ``hi`` (ordinals)."""
        if self.n == 0:
            return np.zeros(len(k0), dtype=np.bool_)
        found: np.ndarray = _set_contains_kernel(
            self.table, self.keys[0], self.keys[1], self.keys[2], self.days, self.seed, lo, hi,
            k0, k1, k2)
        return found


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
    Memory: 36 bytes per stored key of the days touched, and 32 to 64 bytes of tables; past
    ``max_keys`` keys the index gives up for the rest of the call (``refresh`` returns False)
    and the caller streams the stored keys as without one.
    """

    def __init__(self, data_dir: Path, *, max_keys: int = MAX_INDEX_KEYS) -> None:
        self.data_dir = Path(data_dir)
        self.max_keys = max_keys
        self.enabled = True
        self._clear()

    def _clear(self) -> None:
        self._batches: dict[dt.date, set[tuple[int, str]]] = {}
        self._device = _KeySet([TAP_SCHEMA.field(k).type.to_pandas_dtype() for k in DEVICE_KEY],
                               _DEVICE_SEED, self.max_keys)
        self._card = _KeySet([TAP_SCHEMA.field(k).type.to_pandas_dtype() for k in CARD_KEY],
                             _CARD_SEED, self.max_keys)

    def _give_up(self) -> bool:
        self.enabled = False
        self._clear()  # frees the memory
        return False

    def _add(self, day: dt.date, keys: pa.Table | pa.RecordBatch) -> None:
        self._device.add(day.toordinal(), *(_np(keys, k) for k in DEVICE_KEY))
        self._card.add(day.toordinal(), *(_np(keys, k) for k in CARD_KEY))

    def refresh(self, session: Session, days: Sequence[dt.date]) -> bool:
        """Bring ``days`` up to date with SQL; the caller holds the lock on each of them.
        False when the index is (or now gets) too big: the caller streams instead."""
        if not self.enabled:
            return False
        batches, accepted = _committed_batches(session, days)
        if any(not held <= batches.get(day, held) for day, held in self._batches.items()):
            self._clear()  # a batch it holds left its day: read the days again
        try:
            new = {day: sorted(committed - self._batches.get(day, set()))
                   for day, committed in batches.items()}
            more = sum(accepted.get(b, 0) for rows in new.values() for b, _ in rows)
            self._device.reserve(self._device.n + more)
            self._card.reserve(self._card.n + more)
            for day, rows in new.items():
                held = self._batches.setdefault(day, set())
                for batch_id, rel in rows:
                    path = self.data_dir / rel
                    self._add(day, _read(path, KEY_COLUMNS) if path.is_file() else _read(path))
                    held.add((batch_id, rel))
        except _IndexFull:
            return self._give_up()
        except BaseException:
            self._clear()  # half-read: never trusted
            raise
        return True

    def add(self, day: dt.date, batch_id: int, rel: str, keys: pa.Table) -> None:
        """Register a committed batch's accepted taps (its key columns at least)."""
        held = self._batches.get(day)
        if held is None:
            return  # the day is read from its files when a batch next needs it
        try:
            self._add(day, keys)
            held.add((batch_id, rel))
        except _IndexFull:
            self._give_up()
        except BaseException:
            self._clear()
            raise

    def hits(self, days: Sequence[dt.date], batch: pa.Table | pa.RecordBatch
             ) -> tuple[np.ndarray, np.ndarray]:
        """Per batch row: whether a stored tap of ``days`` (consecutive, all refreshed) has its
        device key, its card key."""
        lo, hi = min(days).toordinal(), max(days).toordinal()
        assert all(day in self._batches for day in days) and hi - lo + 1 == len(set(days))
        return (self._device.contains(lo, hi, *(_np(batch, k) for k in DEVICE_KEY)),
                self._card.contains(lo, hi, *(_np(batch, k) for k in CARD_KEY)))


# --------------------------------------------------------------------------- de-duplication


def _np(data: pa.Table | pa.RecordBatch, name: str) -> np.ndarray:
    return np.ascontiguousarray(data.column(name).to_numpy())


def warm_up() -> None:
    """Compile (or load from numba's cache) the de-duplication kernels ahead of first use."""
    keys = pa.table({k: pa.array([1], TAP_SCHEMA.field(k).type) for k in KEY_COLUMNS})
    dedup([keys], keys, np.ones(1, dtype=bool))


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
    dtab, dgroup = _group_kernel(d[0], d[1], d[2], candidate, _DEVICE_SEED)
    ctab, cgroup = _group_kernel(c[0], c[1], c[2], candidate, _CARD_SEED)
    dhit = np.zeros(batch.num_rows, dtype=np.bool_)
    chit = np.zeros(batch.num_rows, dtype=np.bool_)
    if stored_hits is not None:
        dhit[dgroup[candidate & stored_hits[0]]] = True
        chit[cgroup[candidate & stored_hits[1]]] = True
        stored = ()
    for chunk in stored:
        if chunk.num_rows:
            g = probe_groups(dtab, d[0], d[1], d[2], *(_np(chunk, k) for k in DEVICE_KEY),  # type: ignore[call-arg]
                             _DEVICE_SEED)
            dhit[g[g >= 0]] = True
            g = probe_groups(ctab, c[0], c[1], c[2], *(_np(chunk, k) for k in CARD_KEY),  # type: ignore[call-arg]
                             _CARD_SEED)
            chit[g[g >= 0]] = True
    decided: np.ndarray = _decide_kernel(candidate, dgroup, cgroup, dhit, chit)
    return decided


_DEVICE_SEED = np.uint64(0x9E3779B97F4A7C15)
_CARD_SEED = np.uint64(0x6A09E667F3BCC909)


@njit(inline="always")
def _mix(h: np.uint64, x: np.uint64) -> np.uint64:  # pragma: no cover - compiled
    # splitmix64 finaliser over each key field: spreads sequential ids across the table.
    h ^= x
    h *= np.uint64(0xBF58476D1CE4E5B9)
    h ^= h >> np.uint64(31)
    h *= np.uint64(0x94D049BB133111EB)
    h ^= h >> np.uint64(29)
    return h


@njit(inline="always")
def _hash(seed, a, b, c):  # type: ignore[no-untyped-def]  # pragma: no cover - compiled
    return _mix(_mix(_mix(seed, np.uint64(a)), np.uint64(b)), np.uint64(c))


@njit(cache=True, nogil=True)
def _group_kernel(k0, k1, k2, candidate, seed):  # type: ignore[no-untyped-def]  # pragma: no cover
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
    the open-addressing table ``_group_kernel`` builds (de-duplication and replay use it)."""
    mask = np.uint64(len(table) - 1)
    slot = _hash(seed, a, b, c) & mask
    while True:
        j = table[slot]
        if j < 0:
            return -1
        if k0[j] == a and k1[j] == b and k2[j] == c:
            return j
        slot = (slot + np.uint64(1)) & mask


_INDEX_BITS = np.uint64(0xFFFFFFFF)


@njit(cache=True, nogil=True)
def _set_rehash_kernel(size, k0, k1, k2, n, seed):  # type: ignore[no-untyped-def]  # pragma: no cover
    """A fresh ``_KeySet`` table of ``size`` slots (a power of two) over its first ``n`` keys
    (distinct). A slot is -1 (empty) or (31 bits of the key's hash) << 32 | its index."""
    mask = np.uint64(size - 1)
    table = np.full(size, -1, np.int64)
    for i in range(n):
        h = _hash(seed, k0[i], k1[i], k2[i])
        slot = h & mask
        while table[slot] >= 0:
            slot = (slot + np.uint64(1)) & mask
        table[slot] = np.int64(((h >> np.uint64(33)) << np.uint64(32)) | np.uint64(i))
    return table


@njit(cache=True, nogil=True)
def _set_insert_kernel(table, k0, k1, k2, days, n, seed, day, a, b, c):  # type: ignore[no-untyped-def]  # pragma: no cover
    """Append each (key of (a, b, c), ``day``) not yet among the first ``n``; the new count.

    The caller made room: the arrays hold ``n + len(a)`` entries, the table twice that.
    """
    mask = np.uint64(len(table) - 1)
    for i in range(len(a)):
        h = _hash(seed, a[i], b[i], c[i])
        tag = (h >> np.uint64(33)) << np.uint64(32)
        slot = h & mask
        while True:
            v = table[slot]
            if v < 0:
                k0[n] = a[i]
                k1[n] = b[i]
                k2[n] = c[i]
                days[n] = day
                table[slot] = np.int64(tag | np.uint64(n))
                n += 1
                break
            if np.uint64(v) & ~_INDEX_BITS == tag:
                j = np.uint64(v) & _INDEX_BITS
                if days[j] == day and k0[j] == a[i] and k1[j] == b[i] and k2[j] == c[i]:
                    break
            slot = (slot + np.uint64(1)) & mask
    return n


@njit(cache=True, nogil=True)
def _set_contains_kernel(table, k0, k1, k2, days, seed, lo, hi, a, b, c):  # type: ignore[no-untyped-def]  # pragma: no cover
    """Per key of (a, b, c), whether the ``_KeySet`` holds it on a day from lo to hi."""
    mask = np.uint64(len(table) - 1)
    out = np.zeros(len(a), np.bool_)
    for i in range(len(a)):
        h = _hash(seed, a[i], b[i], c[i])
        tag = (h >> np.uint64(33)) << np.uint64(32)
        slot = h & mask
        while True:
            v = table[slot]
            if v < 0:
                break
            if np.uint64(v) & ~_INDEX_BITS == tag:
                j = np.uint64(v) & _INDEX_BITS
                if (lo <= days[j] <= hi and k0[j] == a[i] and k1[j] == b[i]
                        and k2[j] == c[i]):
                    out[i] = True
                    break
            slot = (slot + np.uint64(1)) & mask
    return out


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
