"""The tap store: accepted taps as immutable Parquet files, and the de-duplication key index.

Layout (ARCHITECTURE.md, Storage): ``<data_dir>/taps/day=YYYY-MM-DD/operator=NNN/<sha256>.parquet``,
one file per batch, named by the batch's SHA-256, holding the batch's accepted taps in file
order with ``TAP_SCHEMA``. A file is written under a temporary name, fsynced and renamed, and
only then is the batch committed in SQL; a file that no committed batch names is an orphan of
a crash and is removed by the next ingestion that locks its day.

**The key index (SPEC §4 de-duplication).** A tap is a duplicate when an earlier accepted tap
has its device key ``(operator, device_id, device_seq)`` or its card key ``(issuer, card_id,
card_seq)``. The index is not a separate structure: it is the key columns of the stored tap
files of the days a duplicate can reach, read column-wise from Parquet (6 of 14 columns,
about 32 bytes a tap) when a batch is ingested, and loaded with the batch's own keys into two
open-addressing hash tables inside one numba pass (``dedup``) that also applies the SPEC's
within-batch file order. Why this and not a SQL table of keys:

- cost grows with the taps of the reachable days plus the batch, never with the length of
  history, and is about one second per ten million keys;
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
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from numba import njit
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from clearing.batches import Batch
from clearing.db import session_factory
from clearing.errors import StateError
from clearing.taps import TAP_COLUMNS, TAP_SCHEMA

TAPS_DIR = "taps"
TMP_SUFFIX = ".tmp"  # same convention as clearing.parquet_io
DEDUP_REACH_DAYS = 1  # neighbouring service days, each side, a duplicate key can reach
DEVICE_KEY = ("operator", "device_id", "device_seq")
CARD_KEY = ("issuer", "card_id", "card_seq")
KEY_COLUMNS = DEVICE_KEY + CARD_KEY
# The kernel hashes every field as uint64 and compares it at its own width.
KEY_DTYPES = {"operator": np.uint64, "device_id": np.int64, "device_seq": np.int64,
              "issuer": np.uint64, "card_id": np.uint64, "card_seq": np.int64}

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


def batch_relpath(day: dt.date, operator: int, sha256: str) -> str:
    """Where a batch's accepted taps live, relative to the data directory (stored in SQL)."""
    return f"{TAPS_DIR}/day={day.isoformat()}/operator={operator:03d}/{sha256}.parquet"


# --------------------------------------------------------------------------- writing


def write_batch_taps(
    data_dir: Path, relpath: str, taps: pa.Table, metadata: dict[bytes, bytes]
) -> Path:
    """Write a batch's accepted taps crash-safely: temporary name, fsync, rename, fsync dir.

    Compressed with zstd; dictionary encoding only for the low-cardinality columns, where it
    pays (device ids, sequence numbers and card tokens are near-unique).
    """
    path = Path(data_dir) / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}{TMP_SUFFIX}")
    table = taps.select(list(TAP_COLUMNS)).cast(TAP_SCHEMA).replace_schema_metadata(metadata)
    pq.write_table(
        table,
        tmp,
        compression="zstd",
        compression_level=1,
        use_dictionary=["operator", "issuer", "product", "media", "city", "line", "stop",
                        "tap_type", "debited_fen"],
        row_group_size=1 << 20,
    )
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    _fsync_dir(path.parent)
    return path


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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


# --------------------------------------------------------------------------- reading


def _committed_files(session: Session, days: Sequence[dt.date]) -> list[tuple[dt.date, int, str]]:
    """(day, day_seq, tap_path) of the committed batches of ``days`` that stored taps."""
    rows = session.execute(
        select(Batch.service_day, Batch.day_seq, Batch.tap_path)
        .where(Batch.service_day.in_(list(days)), Batch.tap_path.is_not(None))
        .order_by(Batch.service_day, Batch.day_seq)
    ).all()
    return [(r[0], r[1], str(r[2])) for r in rows]


def committed_paths(session: Session, days: Sequence[dt.date]) -> set[str]:
    return {rel for _, _, rel in _committed_files(session, days)}


def _read(path: Path, columns: Sequence[str] | None = None) -> pa.Table:
    if not path.is_file():
        raise StateError(
            f"{path}: a committed batch's tap file is missing from the data directory; restore "
            "it from backup (the database says it was stored)", code="TAPSTORE_MISSING")
    table = pq.read_table(path, columns=list(columns) if columns else None)
    return table.replace_schema_metadata(None)


def read_day_taps(data_dir: Path, day: dt.date, engine: Engine | None = None) -> pa.Table:
    """A service day's accepted taps, every operator, in acceptance order (SPEC §4).

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
        found = []
        for f in day_dir(root, day).glob("operator=*/*.parquet"):
            meta = pq.read_schema(f).metadata or {}
            found.append((int(meta.get(META_DAY_SEQ, b"0")), f.name, f))
        paths = [f for _, _, f in sorted(found)]
    tables = [_read(p) for p in paths]
    if not tables:
        return TAP_SCHEMA.empty_table()
    return pa.concat_tables(tables).cast(TAP_SCHEMA).combine_chunks()


def read_keys(data_dir: Path, session: Session, days: Sequence[dt.date]) -> pa.Table:
    """The de-duplication keys of every committed tap of ``days`` (the key index, see above)."""
    root = Path(data_dir)
    tables = [_read(root / rel, KEY_COLUMNS) for _, _, rel in _committed_files(session, days)]
    if not tables:
        return TAP_SCHEMA.empty_table().select(list(KEY_COLUMNS))
    return pa.concat_tables(tables)


# --------------------------------------------------------------------------- de-duplication


def _np(table: pa.Table, name: str) -> np.ndarray:
    return np.ascontiguousarray(table.column(name).to_numpy())


def dedup(stored: pa.Table, batch: pa.Table, candidate: np.ndarray) -> np.ndarray:
    """SPEC §4 de-duplication of a batch against stored taps and itself, in file order.

    ``stored`` holds the keys of previously accepted taps, ``batch`` the batch's rows (key
    columns at least), ``candidate`` the rows that passed the acceptance checks. Returns per
    batch row ``ACCEPTED``, ``DUPLICATE`` or ``NOT_CANDIDATE``. A candidate is a duplicate when
    a stored tap, or an earlier accepted row of the batch, shares its device key or its card
    key; only accepted rows register keys, so a duplicate blocks nothing.
    """
    n_stored = stored.num_rows
    if batch.num_rows == 0:
        return np.zeros(0, dtype=np.int8)
    cols = [np.concatenate([_np(stored, c), _np(batch, c)]).astype(KEY_DTYPES[c], copy=False)
            if n_stored else _np(batch, c).astype(KEY_DTYPES[c], copy=False)
            for c in KEY_COLUMNS]
    return _dedup_kernel(  # type: ignore[call-arg]
        *cols, n_stored, np.ascontiguousarray(candidate, dtype=np.bool_))


@njit(inline="always")
def _mix(h: np.uint64, x: np.uint64) -> np.uint64:  # pragma: no cover - compiled
    # splitmix64 finaliser over each key field: spreads sequential ids across the table.
    h ^= x
    h *= np.uint64(0xBF58476D1CE4E5B9)
    h ^= h >> np.uint64(31)
    h *= np.uint64(0x94D049BB133111EB)
    h ^= h >> np.uint64(29)
    return h


@njit(cache=True, nogil=True)
def _dedup_kernel(d0, d1, d2, c0, c1, c2, n_stored, candidate):  # type: ignore[no-untyped-def]  # pragma: no cover
    """One pass: stored rows register their keys, then batch candidates in file order.

    Two open-addressing tables (load <= 1/2) hold row indices; a probe compares the full
    key columns, so the result is exact whatever the hash does.
    """
    n = len(d0)
    size = 2
    while size < 2 * n + 2:
        size <<= 1
    mask = np.uint64(size - 1)
    dtab = np.full(size, -1, np.int32)  # row indices; batches are far below 2**31 rows
    ctab = np.full(size, -1, np.int32)
    out = np.zeros(n - n_stored, np.int8)
    for i in range(n):
        if i >= n_stored and not candidate[i - n_stored]:
            continue
        h = _mix(_mix(_mix(np.uint64(0x9E3779B97F4A7C15), d0[i]), np.uint64(d1[i])),
                 np.uint64(d2[i]))
        dslot = h & mask
        dfound = False
        while True:
            j = dtab[dslot]
            if j < 0:
                break
            if d0[j] == d0[i] and d1[j] == d1[i] and d2[j] == d2[i]:
                dfound = True
                break
            dslot = (dslot + np.uint64(1)) & mask
        h = _mix(_mix(_mix(np.uint64(0x6A09E667F3BCC909), c0[i]), c1[i]),
                 np.uint64(c2[i]))
        cslot = h & mask
        cfound = False
        while True:
            j = ctab[cslot]
            if j < 0:
                break
            if c0[j] == c0[i] and c1[j] == c1[i] and c2[j] == c2[i]:
                cfound = True
                break
            cslot = (cslot + np.uint64(1)) & mask
        if i < n_stored:  # previously accepted: registers whatever is new
            if not dfound:
                dtab[dslot] = i
            if not cfound:
                ctab[cslot] = i
        elif dfound or cfound:
            out[i - n_stored] = 2  # DUPLICATE
        else:
            dtab[dslot] = i
            ctab[cslot] = i
            out[i - n_stored] = 1  # ACCEPTED
    return out
