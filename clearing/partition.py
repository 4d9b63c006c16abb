"""Scale-out: clear a day on a dask.distributed cluster whose workers read and write their own
card partitions, while the coordinating process holds no tap and no leg.

Taps partition cleanly by card (ARCHITECTURE: Scale): a card's day never needs another card's
taps, and chains, caps, transfers and apportionment are all per card. So a day is cleared in
two stages of independent tasks, over shared storage (a directory, or any fsspec URL):

1. **Split**, one task per committed batch file of the day, or per ``PIECE_ROWS`` taps of a
   large one (so the largest file does not make the stage's critical path): it reads its rows
   of the file and writes them grouped by card bucket (``BUCKETS`` buckets of a hash of the
   card) to ``cards/day=D/<key>.parquet``: one file per piece, each row group holding the taps
   of one bucket (in file order), the bucket of every row group in the file's metadata. So a
   partition reads exactly its buckets' row groups, and a day has one such file per piece
   (not 64: every file is an fsync and an open). ``key`` names the content (the batch's day
   sequence, file name, a fingerprint of its Parquet footer and the piece's rows), and a
   stored batch file never changes, so a split is written once and reused by every later
   clear of the day: after a late batch only that batch is split. The tap store itself is
   untouched (one file per batch; ingestion's crash safety and de-duplication stay as they
   are): splits are derived data, rebuilt from it at will.
2. **Price**, one task per partition (a fixed set of buckets): it reads exactly its buckets'
   row groups of the batches listed, checks every tap still prices (SPEC §4), matches and prices
   them with the fast path, writes ``legs/day=D/run=<run>/part-PPP.parquet`` and returns only
   counts and the partial sums a ``LegSummary`` computes from its legs (settlement's, handed in
   by the application: clearing must not import settlement). It also computes the SPEC §10
   card signals of its cards (replays from the earlier days' splits of its own buckets, which
   stage 1 makes once) into ``signals-PPP.parquet``, and returns per-device leg counts; the
   coordinator adds those up for DEBIT_MISMATCH, and one more task writes the flagged
   devices' signals from the evidence the partitions kept (``device_signals``).

The coordinator lists the batch files (paths, from the database or the directory), scatters
the tariff set once, sends paths and partition numbers, and adds up the partial sums; it never
reads a tap or a leg. ``clearing.day`` then commits the run by replacing ``legs.parquet`` with
a manifest naming the parts and signal files, so readers see the old legs and signals or the
new ones, never a mix (``read_signal_parts`` reads the signals back in canonical order).

Files are read and written through pyarrow filesystems, so the same code runs on a local
directory (atomic: temporary name, fsync, rename) or an fsspec URL such as ``s3://`` (where a
whole object appears at once on upload). ``tests/test_scaleout_identity.py`` holds a
partitioned clear and settlement equal to the single-process one.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import hashlib
import json
import os
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, TYPE_CHECKING, Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from clearing.accept import day_rules
from clearing.errors import ErrorCode, StateError, TongkaError
from clearing.files import TMP_SUFFIX, atomic_file
from clearing.legs import LEG_SCHEMA, sort_legs
from clearing.legs_store import REVISION_KEY
from clearing.risk_reference import MISMATCH_MIN_LEGS, MISMATCH_SHARE_PERCENT
from clearing.taps import FULL_TAP_SCHEMA, TAP_COLUMNS, with_optional_columns
from tariffs.load import TariffSet

if TYPE_CHECKING:
    from dask.distributed import Client

BUCKETS = 64  # card buckets of a day: the most partitions a day can have
CARDS_DIR = "cards"
GROUPS_KEY = b"tongka.row_group_buckets"  # JSON: the bucket of each row group of a split
BATCH_ROW = "batch_row"  # int64: a bucket tap's row in its batch file (for DAY_UNPRICEABLE)
BUCKET_SCHEMA = FULL_TAP_SCHEMA.append(pa.field(BATCH_ROW, pa.int64(), nullable=False))
PIECE_ROWS = 1 << 20  # taps of one split task and file: a large batch is split in pieces
RUN_KEY = b"tongka.clear_run"
PART_KEY = b"tongka.partition"
_META_DAY_SEQ = b"tongka.day_seq"  # clearing.tapstore.META_DAY_SEQ (not imported: no SQL here)

# Fibonacci hashing constant: spreads consecutive issuer codes across partitions.
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


# --------------------------------------------------------------------------- dask, optional


class ScaleNotInstalledError(TongkaError):
    """``--partitions`` without dask.distributed, an optional extra (``tongka[scale]``)."""


def require_dask() -> None:
    """Raise SCALE_NOT_INSTALLED (exit 2) with the fix when dask.distributed is missing."""
    try:  # the optional extra: a probe, not a use
        import dask.distributed  # noqa: F401
    except ImportError as exc:
        raise ScaleNotInstalledError(
            f"clearing on partitions needs dask.distributed, which is not installed ({exc}): "
            "install the scale extra, `pip install 'tongka[scale]'`, or clear without "
            "--partitions", code=ErrorCode.SCALE_NOT_INSTALLED) from None


def local_client(workers: int, **cluster: Any) -> Client:
    """A dask.distributed client on a cluster of ``workers`` local processes (one thread each),
    listening on 127.0.0.1 only (its dashboard on a free port: several clusters may run)."""
    require_dask()
    # dask is the optional scale extra (and +0.23 s, -X importtime): only a partitioned clear
    from dask.distributed import Client, LocalCluster

    options = {"threads_per_worker": 1, "processes": True, "dashboard_address": "127.0.0.1:0",
               **cluster}
    if options["processes"]:  # in-process workers talk over inproc://, no socket
        options.setdefault("host", "127.0.0.1")
    # distributed's Client and LocalCluster constructors are unannotated
    return Client(LocalCluster(n_workers=workers, **options))  # type: ignore[no-untyped-call]


def scheduler_client(address: str) -> Client:
    """A dask.distributed client of the running cluster at ``address``."""
    from dask.distributed import Client  # the optional scale extra, as in local_client

    return Client(address)  # type: ignore[no-untyped-call]  # unannotated constructor


# --------------------------------------------------------------------------- cards


def card_partitions(card_id: np.ndarray, issuer: np.ndarray, n: int) -> np.ndarray:
    """The partition (0..n-1) of each tap's card ``(issuer, card_id)``; stable across runs."""
    if n < 1:
        raise ValueError("the number of partitions must be at least 1")
    mixed = card_id.astype(np.uint64) ^ (issuer.astype(np.uint64) * _GOLDEN)
    return (mixed % np.uint64(n)).astype(np.int64)


def card_buckets(card_id: np.ndarray, issuer: np.ndarray) -> np.ndarray:
    """The bucket (0..BUCKETS-1) of each tap's card: what the stored card partitions use."""
    return card_partitions(card_id, issuer, BUCKETS)


def partition_buckets(partition: int, partitions: int) -> list[int]:
    """The buckets partition ``partition`` of ``partitions`` owns: every ``partitions``-th."""
    return list(range(partition, BUCKETS, partitions))


def split_by_card(taps: pa.Table, n: int) -> list[pa.Table]:
    """``n`` tables holding every tap once, each card wholly in one of them."""
    part = card_partitions(taps.column("card_id").to_numpy(), taps.column("issuer").to_numpy(), n)
    order = np.argsort(part, kind="stable")
    bounds = np.searchsorted(part[order], np.arange(n + 1))
    return [taps.take(pa.array(order[bounds[i] : bounds[i + 1]])) for i in range(n)]


# --------------------------------------------------------------------------- storage


@functools.cache
def filesystem(url: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, root path) of shared storage: a local directory, or an fsspec URL.

    Cached per process: a worker builds each filesystem once, from the string it was sent.
    """
    if "://" not in url:
        return pafs.LocalFileSystem(), Path(url).absolute().as_posix()
    import fsspec  # comes with the optional scale extra; only for a URL (+0.03 s)

    fs, root = fsspec.core.url_to_fs(url)
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), root.rstrip("/")


def _join(root: str, rel: str) -> str:
    return f"{root}/{rel}"


def _exists(fs: pafs.FileSystem, path: str) -> bool:
    found: bool = fs.get_file_info(path).type != pafs.FileType.NotFound
    return found


@contextmanager
def _output(fs: pafs.FileSystem, path: str) -> Iterator[IO[bytes]]:
    """A stream that becomes ``path`` when the block ends without error, nothing otherwise.

    Locally the engine's one atomic writer (``clearing.files``: fsync, rename, fsync the
    directory); elsewhere a temporary name moved into place (an object store's upload is
    atomic by itself).
    """
    if isinstance(fs, pafs.LocalFileSystem):
        with atomic_file(Path(path), "wb") as fh:
            yield fh
        return
    fs.create_dir(str(PurePosixPath(path).parent), recursive=True)
    tmp = f"{path}.{os.getpid()}-{uuid.uuid4().hex[:8]}{TMP_SUFFIX}"
    try:
        with fs.open_output_stream(tmp) as out:
            yield out
        fs.move(tmp, path)
    except BaseException:
        with suppress(OSError):
            fs.delete_file(tmp)
        raise


def _write_table(fs: pafs.FileSystem, path: str, table: pa.Table) -> int:
    """Write a Parquet file wholly or not at all (zstd level 1, as ``parquet_io``); its size."""
    with _output(fs, path) as out:
        pq.write_table(table, out, compression="zstd", compression_level=1)
    return fs.get_file_info(path).size or 0


def footer_fingerprint(fs: pafs.FileSystem, path: str) -> str:
    """A name for one Parquet file's content, read from its tail alone: the hash of its size
    and footer (every column chunk's offsets, sizes and statistics, and the key-value
    metadata). Stored tap files never change once written; this tells apart the rare reuse of
    a name (a crashed ingest's orphan read without a database, then the batch stored again)."""
    try:
        f = fs.open_input_file(path)
    except FileNotFoundError:
        raise StateError(f"{path}: a committed batch's tap file is missing from the storage the "
                         "workers read (the data directory's layout, or --storage)",
                         code=ErrorCode.TAPSTORE_MISSING) from None
    with f:
        size = f.size()
        f.seek(size - 8)
        tail = f.read(8)
        if size < 12 or tail[4:] != b"PAR1":
            raise StateError(f"{path}: not a Parquet file; the tap store is damaged",
                             code=ErrorCode.TAPSTORE_MISSING)
        length = int.from_bytes(tail[:4], "little")
        f.seek(size - 8 - length)
        footer = f.read(length)
    return hashlib.sha256(size.to_bytes(8, "little") + footer).hexdigest()[:16]


# --------------------------------------------------------------------------- paths


def cards_dir(day: dt.date) -> str:
    return f"{CARDS_DIR}/day={day.isoformat()}"


def split_relpath(day: dt.date, key: str) -> str:
    return f"{cards_dir(day)}/{key}.parquet"


def run_dir(day: dt.date, run: str) -> str:
    return f"legs/day={day.isoformat()}/run={run}"


def part_relpath(day: dt.date, run: str, partition: int) -> str:
    return f"{run_dir(day, run)}/part-{partition:03d}.parquet"


def split_key(day_seq: int, rel: str, fingerprint: str, start: int, stop: int) -> str:
    """``<day_seq>-<file stem>-<fingerprint>-b<BUCKETS>-<start>-<stop>``: the sequence orders
    keys as batches were stored, the stem names the batch, the bucket count makes a split made
    for another number of buckets another key (removed as stale, never misread), and the rows
    name the piece of the file."""
    stem = PurePosixPath(rel).name.removesuffix(".parquet")
    return f"{day_seq:06d}-{stem}-{fingerprint}-b{BUCKETS}-{start}-{stop}"


# --------------------------------------------------------------------------- stage 1: split


@dataclass(frozen=True, slots=True)
class Split:
    """Rows ``start:stop`` of one batch file split into card buckets (now, or by an earlier
    clear)."""

    rel: str  # the batch file, under the storage root
    start: int
    stop: int
    key: str  # its split is split_relpath(day, key)
    groups: tuple[int, ...]  # the bucket of each row group of the split
    group_rows: tuple[int, ...]  # the taps of each row group
    written: bool  # False: an earlier clear had split it (only its footer was read)
    bytes_read: int
    bytes_written: int
    seconds: float

    def row_groups(self, buckets: Sequence[int]) -> list[int]:
        """The row groups holding ``buckets``' taps, in file order."""
        wanted = set(buckets)
        return [i for i, b in enumerate(self.groups) if b in wanted]

    @property
    def rows(self) -> dict[int, int]:
        """Taps per bucket (buckets without taps are absent)."""
        out: dict[int, int] = {}
        for b, n in zip(self.groups, self.group_rows, strict=True):
            out[b] = out.get(b, 0) + n
        return out


def split_batch(url: str, day: dt.date, rel: str, day_seq: int | None, start: int, stop: int,
                rows: int, optional: bool = False) -> Split:
    """Split rows ``start:stop`` of one stored batch file of ``day`` into card buckets, unless
    an earlier clear did; a task of its own on a worker.

    ``day_seq`` is the batch's place in the day (None: read from the file's metadata) and
    ``rows`` its taps as the coordinator listed them: a file that holds another number is a
    state conflict, never a silently partial day. The split is one file, written whole or not
    at all, so its existence says it is complete. ``optional``: a file that is not there is
    split into nothing (an earlier day's file read for replays, which ``clearing.risk_store``
    skips when it is gone), not ``TAPSTORE_MISSING``.
    """
    began = time.perf_counter()
    fs, root = filesystem(url)
    src = _join(root, rel)
    if optional and not _exists(fs, src):
        return Split(rel, start, stop, "", (), (), False, 0, 0, time.perf_counter() - began)
    fingerprint = footer_fingerprint(fs, src)
    with fs.open_input_file(src) as f:
        parquet = pq.ParquetFile(f)
        meta = parquet.metadata
        if meta.num_rows != rows:
            raise StateError(f"{rel} holds {meta.num_rows} taps where {rows} were listed: the "
                             "tap store and the database disagree; clear the day again",
                             code=ErrorCode.STATE_CONFLICT)
        if day_seq is None:
            day_seq = int((parquet.schema_arrow.metadata or {}).get(_META_DAY_SEQ, b"0"))
        key = split_key(day_seq, rel, fingerprint, start, stop)
        target = _join(root, split_relpath(day, key))
        if _exists(fs, target):
            groups, sizes = _split_groups(fs, target)
            return Split(rel, start, stop, key, groups, sizes, False, 0, 0,
                         time.perf_counter() - began)
        source_groups, at = _row_groups_in(meta, start, stop)
        kept: list[int] = []  # the bucket of each row group written
        counts: list[int] = []
        with _output(fs, target) as out:
            writer = pq.ParquetWriter(out, BUCKET_SCHEMA, compression="zstd",
                                      compression_level=1)
            try:
                for batch in parquet.iter_batches(batch_size=PIECE_ROWS,
                                                  row_groups=source_groups):
                    lo, hi = max(start, at), min(stop, at + batch.num_rows)
                    if lo < hi:
                        piece = pa.Table.from_batches([batch.slice(lo - at, hi - lo)])
                        _write_buckets(writer, _bucket_table(piece, lo), kept, counts)
                    at += batch.num_rows
                writer.add_key_value_metadata({GROUPS_KEY: json.dumps(kept).encode()})
            finally:
                writer.close()
    read = sum(_stored_bytes(meta.row_group(i)) for i in source_groups)
    return Split(rel, start, stop, key, tuple(kept), tuple(counts), True, read,
                 fs.get_file_info(target).size or 0, time.perf_counter() - began)


def _row_groups_in(meta: pq.FileMetaData, start: int, stop: int) -> tuple[list[int], int]:
    """The row groups holding rows ``start:stop`` of a file, and the row the first begins at."""
    groups: list[int] = []
    first = at = 0
    for i in range(meta.num_row_groups):
        n = meta.row_group(i).num_rows
        if at < stop and at + n > start:
            if not groups:
                first = at
            groups.append(i)
        at += n
    return groups, first


def _write_buckets(writer: pq.ParquetWriter, taps: pa.Table, kept: list[int],
                   counts: list[int]) -> None:
    """Append ``taps`` as one row group per card bucket, each in file order."""
    bucket = card_buckets(taps.column("card_id").to_numpy(), taps.column("issuer").to_numpy())
    order = np.argsort(bucket, kind="stable")  # file order within a bucket
    bounds = np.searchsorted(bucket[order], np.arange(BUCKETS + 1))
    grouped = taps.take(pa.array(order))  # one gather; the buckets are slices of it
    for b in np.flatnonzero(np.diff(bounds)).tolist():
        piece = grouped.slice(bounds[b], bounds[b + 1] - bounds[b])
        writer.write_table(piece, row_group_size=piece.num_rows)
        kept.append(b)
        counts.append(piece.num_rows)


def _stored_bytes(group: pq.RowGroupMetaData) -> int:
    """A row group's bytes in the file (compressed): what reading it fetches."""
    return sum(group.column(j).total_compressed_size for j in range(group.num_columns))


def _split_groups(fs: pafs.FileSystem, path: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The bucket and taps of each row group of a split, from its footer."""
    with fs.open_input_file(path) as f:
        meta = pq.ParquetFile(f).metadata
    groups = tuple(int(b) for b in json.loads((meta.metadata or {})[GROUPS_KEY]))
    return groups, tuple(meta.row_group(i).num_rows for i in range(meta.num_row_groups))


def _bucket_table(taps: pa.Table, offset: int) -> pa.Table:
    """A piece of a tap file as bucket rows: every FULL_TAP_SCHEMA column and the batch row."""
    full = with_optional_columns(taps.replace_schema_metadata(None))
    rows = pa.array(np.arange(offset, offset + full.num_rows, dtype=np.int64))
    return full.append_column(BUCKET_SCHEMA.field(BATCH_ROW), rows).cast(BUCKET_SCHEMA)


# --------------------------------------------------------------------------- stage 2: price


class LegSummary(Protocol):
    """What each partition computes from its legs besides storing them, and how the parts add
    up: ``settlement.partials.SETTLEMENT_SUMS``. Its ``dumps`` of the merged sums is stored
    beside the legs under ``key``."""

    key: bytes

    def of(self, legs: pa.Table, day: dt.date) -> Any: ...

    def merge(self, parts: Sequence[Any], day: dt.date) -> Any: ...

    def dumps(self, merged: Any) -> bytes: ...


Unpriceable = tuple[int, int, int, int, int, int, int, int, int]
# (pricing status, batch index, row in the batch file, operator, line, device_id, device_seq,
#  ts_ms, partition): a tap the tariff set no longer prices (SPEC §4), for DAY_UNPRICEABLE


@dataclass(frozen=True, slots=True)
class PartitionStats:
    """What one partition task did: the figures the scale-out projection is made of."""

    partition: int
    taps: int
    legs: int
    files_read: int
    bytes_read: int
    bytes_written: int
    seconds: float
    path: str  # its legs file, under the storage root ("" when it priced nothing)
    signals: int = 0  # SPEC §10 card signals of its cards (DEBIT_MISMATCH is the day's)
    signals_path: str = ""  # their file beside the legs ("" when there are none)


DeviceCounts = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
# per boarding device (operator, device_id): its legs and its mismatching legs (SPEC §10
# DEBIT_MISMATCH), int64 arrays of one entry per device: O(devices), not O(legs)

EVIDENCE_SCHEMA = pa.schema([  # the boarding tap of a mismatching leg, for DEBIT_MISMATCH
    pa.field("operator", pa.int64()), pa.field("device_id", pa.int64()),
    pa.field("ts_ms", pa.int64()), pa.field("batch", pa.int64()),  # batch: acceptance order
    pa.field(BATCH_ROW, pa.int64()), pa.field("device_seq", pa.int64()),
    pa.field("city", pa.int64()),
])


@dataclass(frozen=True, slots=True)
class PartitionResult:
    stats: PartitionStats
    summary: Any  # the LegSummary's sums of this partition's legs (None without a summary)
    unpriceable: tuple[Unpriceable, ...]  # the first ``listed`` by (batch, row); no legs then
    unpriceable_count: int
    devices: DeviceCounts | None = None  # None: no legs (unpriceable)
    # the boarding taps of its mismatching legs (EVIDENCE_SCHEMA): kept on the worker, read
    # by the task that writes the day's DEBIT_MISMATCH signals, never sent to the coordinator
    evidence: pa.Table | None = None

    def small(self) -> PartitionResult:
        """This result without the evidence: what the coordinator receives."""
        return dataclasses.replace(self, evidence=None)


def price_partition(
    url: str, day: dt.date, partition: int, files: Sequence[tuple[str, int, Sequence[int]]],
    tariffs: TariffSet, revision: int, run: str, summary: LegSummary | None, listed: int,
    earlier: Sequence[tuple[str, dt.date, Sequence[int]]] = (),
) -> PartitionResult:
    """Read, check, match, price and store one partition's taps, and compute its cards' risk
    signals; a task of its own.

    ``files`` are (split, index of its batch in the day's acceptance order, the row groups of
    the partition's buckets), in that order: each card's taps stay in acceptance order, which
    is all the fast path's stable sort needs to give the single-process legs. ``earlier`` are
    (split, its service day, the row groups of the partition's buckets) of the stored batch
    files a replay reaches (``clearing.risk.replay_days``), in the order
    ``clearing.risk_store.earlier_keys`` reads them: the card keys of the partition's cards on
    those days, for CARD_SEQ_REPLAY.

    The card signals (SPEC §10: every kind but DEBIT_MISMATCH) need only the card's own taps
    and keys, so they are this partition's alone, in canonical order, in
    ``signals-PPP.parquet`` beside the legs. DEBIT_MISMATCH is a device's over every card:
    the task returns per-device counts of its legs (small) and keeps the boarding taps of its
    mismatching legs in ``evidence`` for ``device_signals``.
    """
    # numba kernels (+0.19 s): this module is imported by clearing.day, for every reader of legs
    from clearing.fast import match_and_price_fast

    start = time.perf_counter()
    fs, root = filesystem(url)
    tables, sizes, read = [], [], 0
    for rel, _, row_groups in files:
        with fs.open_input_file(_join(root, rel)) as f:
            split = pq.ParquetFile(f)
            read += sum(_stored_bytes(split.metadata.row_group(i)) for i in row_groups)
            tables.append(split.read_row_groups(list(row_groups)))
        sizes.append(tables[-1].num_rows)
    taps = pa.concat_tables(tables) if tables else BUCKET_SCHEMA.empty_table()
    del tables
    n = taps.num_rows
    status = day_rules(tariffs, day).status(np.asarray(taps.column("operator").to_numpy()),
                                            np.asarray(taps.column("line").to_numpy()))
    bad = np.flatnonzero(status)
    if len(bad):
        batches = np.repeat(np.array([b for _, b, _ in files], dtype=np.int64), sizes)
        rows = np.asarray(taps.column(BATCH_ROW).to_numpy())
        first = bad[np.lexsort((rows[bad], batches[bad]))[:listed]]
        picked = taps.select(["operator", "line", "device_id", "device_seq", "ts_ms"]).take(
            pa.array(first)).to_pylist()
        found = tuple((int(status[i]), int(batches[i]), int(rows[i]), int(r["operator"]),
                       int(r["line"]), int(r["device_id"]), int(r["device_seq"]),
                       int(r["ts_ms"]), partition)
                      for i, r in zip(first.tolist(), picked, strict=True))
        stats = PartitionStats(partition, n, 0, len(files), read, 0,
                               time.perf_counter() - start, "")
        return PartitionResult(stats, None, found, len(bad))
    legs = (match_and_price_fast(taps.select(list(TAP_COLUMNS)), tariffs) if n
            else LEG_SCHEMA.empty_table())
    legs = legs.replace_schema_metadata({REVISION_KEY: str(revision).encode(),
                                         RUN_KEY: run.encode(), PART_KEY: str(partition).encode()})
    rel = part_relpath(day, run, partition)
    written = _write_table(fs, _join(root, rel), legs)
    # SPEC §10: after pricing, never fed back into the legs
    signals = card_signals_of(day, taps, _earlier_keys(url, earlier))
    sig_rel = ""
    if signals.num_rows:
        sig_rel = signals_relpath(day, run, partition)
        written += _write_table(fs, _join(root, sig_rel), signals)
    batches = np.repeat(np.array([b for _, b, _ in files], dtype=np.int64), sizes)
    devices, evidence = device_tallies(legs, taps, batches)
    del taps, batches
    sums = summary.of(legs, day) if summary is not None else None
    stats = PartitionStats(partition, n, legs.num_rows, len(files), read, written,
                           time.perf_counter() - start, rel, signals.num_rows, sig_rel)
    return PartitionResult(stats, sums, (), 0, devices, evidence)


# --------------------------------------------------------------------------- risk signals


def signals_relpath(day: dt.date, run: str, partition: int) -> str:
    return f"{run_dir(day, run)}/signals-{partition:03d}.parquet"


def device_signals_relpath(day: dt.date, run: str) -> str:
    return f"{run_dir(day, run)}/signals-devices.parquet"


def card_signals_of(day: dt.date, taps: pa.Table, earlier: Any) -> pa.Table:
    """The card signals of a partition's taps (whole cards, with ``balance_fen``): the
    single-process ``day_signals`` without legs, so every kind but DEBIT_MISMATCH, and each
    card's rows exactly as the whole day's run gives them (a card's signals read only its own
    taps and keys, and its taps keep their relative order)."""
    from clearing.risk import day_signals  # numba kernels (+0.54 s), as in price_partition

    return day_signals(day, taps.select(list(FULL_TAP_SCHEMA.names)), None, earlier=earlier)


def _earlier_keys(url: str, earlier: Sequence[tuple[str, dt.date, Sequence[int]]]
                  ) -> Iterator[Any]:
    """``risk.EarlierKeys`` chunks of the partition's cards on the days a replay reaches: one
    per split piece (its row groups of the partition's buckets, at most ``PIECE_ROWS`` taps),
    card key only; the device key is read for the rows that replay (evidence), as
    ``risk_store.earlier_keys`` does. Memory is one piece's keys, and every partition reads
    only its own buckets' bytes. (A chunk per row group cost twice the time: a partition of
    a 64-bucket day has hundreds of small row groups per day.)"""
    # numba kernels (risk +0.54 s, tapstore +0.48 s), as in price_partition
    from clearing.risk import EarlierKeys
    from clearing.tapstore import CARD_KEY

    fs, root = filesystem(url)
    for rel, when, groups in earlier:
        if not groups:
            continue
        with fs.open_input_file(_join(root, rel)) as f:
            keys = pq.ParquetFile(f).read_row_groups(list(groups), columns=list(CARD_KEY))
        yield EarlierKeys(when, {c: np.ascontiguousarray(keys.column(c).to_numpy())
                                 for c in CARD_KEY},
                          functools.partial(_split_device_rows, url, rel, tuple(groups)))


def _split_device_rows(url: str, rel: str, groups: tuple[int, ...], rows: np.ndarray
                       ) -> dict[str, np.ndarray]:
    """The device key of some rows of some row groups of a split (a replay's evidence)."""
    from clearing.tapstore import DEVICE_KEY  # numba kernels (+0.48 s), as in price_partition

    fs, root = filesystem(url)
    with fs.open_input_file(_join(root, rel)) as f:
        keys = pq.ParquetFile(f).read_row_groups(list(groups), columns=list(DEVICE_KEY))
    return {c: np.asarray(keys.column(c).to_numpy())[rows] for c in DEVICE_KEY}


def device_tallies(legs: pa.Table, taps: pa.Table, batches: np.ndarray
                   ) -> tuple[DeviceCounts, pa.Table]:
    """Per boarding device, its legs and mismatching legs (``DeviceCounts``); and the boarding
    tap of every mismatching leg (``EVIDENCE_SCHEMA``; ``batches`` is each tap's batch index).

    Which legs mismatch is ``clearing.risk``'s rule (its leg columns), not restated here. A
    leg's boarding tap is the tap with its card key ``(issuer, card_id, board_card_seq)``
    (unique in a day) read by the leg's device, as the single-process evidence is.
    """
    # numba kernels (+0.54 s), as in price_partition
    from clearing.risk import ReplayIndex, _mismatch_columns

    op, dev, bad = _mismatch_columns(legs)
    counts = pa.table({"operator": op, "device_id": dev,
                       "bad": bad.astype(np.int64)}).group_by(
        ["operator", "device_id"], use_threads=False).aggregate([("bad", "count"),
                                                                 ("bad", "sum")])
    o, d, n, m = (np.asarray(counts.column(c).to_numpy(), np.int64)
                  for c in ("operator", "device_id", "bad_count", "bad_sum"))
    devices: DeviceCounts = (o, d, n, m)
    sel = np.flatnonzero(bad)
    if len(sel) == 0 or taps.num_rows == 0:
        return devices, EVIDENCE_SCHEMA.empty_table()
    index = ReplayIndex.of({
        "issuer": np.asarray(legs.column("issuer").to_numpy())[sel],
        "card_id": np.asarray(legs.column("card_id").to_numpy())[sel],
        "card_seq": np.asarray(legs.column("board_card_seq").to_numpy())[sel]})
    pairs = index.probe({c: np.ascontiguousarray(taps.column(c).to_numpy())
                         for c in ("issuer", "card_id", "card_seq")})
    leg_at = np.array([i for i, _ in pairs], np.int64)
    tap_at = np.array([j for _, j in pairs], np.int64)
    t = taps.select(["operator", "device_id", "ts_ms", BATCH_ROW, "device_seq", "city"]).take(
        pa.array(tap_at))
    t_op = np.asarray(t.column("operator").to_numpy(), np.int64)
    t_dev = np.asarray(t.column("device_id").to_numpy(), np.int64)
    same = (t_op == op[sel][leg_at]) & (t_dev == dev[sel][leg_at])
    keep = pa.array(np.flatnonzero(same))
    out = {"operator": t_op[same], "device_id": t_dev[same],
           "ts_ms": np.asarray(t.column("ts_ms").to_numpy(), np.int64)[same],
           "batch": batches[tap_at[same]]}
    for c in (BATCH_ROW, "device_seq", "city"):
        out[c] = np.asarray(t.column(c).take(keep).to_numpy(), np.int64)
    return devices, pa.table(out, schema=EVIDENCE_SCHEMA)


def flagged_devices(parts: Sequence[DeviceCounts]) -> list[tuple[int, int, int, int]]:
    """SPEC §10 DEBIT_MISMATCH over the whole day from the partitions' device counts:
    ``(operator, device_id, mismatching legs, legs)`` of each device raising it, by device
    (``risk.mismatch_devices``'s contract and thresholds)."""
    if not parts:
        return []
    table = pa.table({k: np.concatenate([p[i] for p in parts]) for i, k in
                      enumerate(("operator", "device_id", "n", "m"))})
    total = table.group_by(["operator", "device_id"], use_threads=False).aggregate(
        [("n", "sum"), ("m", "sum")])
    o, d, n, m = (np.asarray(total.column(c).to_numpy(), np.int64)
                  for c in ("operator", "device_id", "n_sum", "m_sum"))
    at = np.flatnonzero((m >= MISMATCH_MIN_LEGS) & (100 * m > MISMATCH_SHARE_PERCENT * n))
    at = at[np.lexsort((d[at], o[at]))]
    return [(int(o[i]), int(d[i]), int(m[i]), int(n[i])) for i in at]


def _flagged(flagged: Sequence[tuple[int, int]]) -> pa.Table:
    return pa.table({"operator": pa.array([o for o, _ in flagged], pa.int64()),
                     "device_id": pa.array([d for _, d in flagged], pa.int64()),
                     "k": pa.array(np.arange(len(flagged), dtype=np.int64))})


def flagged_evidence(part: PartitionResult, flagged: Sequence[tuple[int, int]]) -> pa.Table:
    """A partition's evidence rows of the ``flagged`` devices only, with each one's index in
    ``flagged`` (``k``); a task where the partition's result is, so only these rows move."""
    ev = part.evidence if part.evidence is not None else EVIDENCE_SCHEMA.empty_table()
    return _flagged_rows(ev, flagged)


def _flagged_rows(evidence: pa.Table, flagged: Sequence[tuple[int, int]]) -> pa.Table:
    return evidence.join(_flagged(flagged), ["operator", "device_id"], join_type="inner")


def device_signals(url: str, day: dt.date, run: str, flagged: Sequence[tuple[int, int]],
                   evidence: Sequence[pa.Table]) -> tuple[str, int]:
    """Write the day's DEBIT_MISMATCH signals for the ``flagged`` devices from the partitions'
    ``flagged_evidence``; a task on a worker, so the evidence never reaches the coordinator.
    Returns the file (under the storage root) and its signals.

    A signal's evidence is the boarding taps of its device's mismatching legs over every
    partition, in time order, then in the day's tap order (batch, row): the single-process
    order, whatever the partitions."""
    from clearing.risk import SIGNAL_SCHEMA, RiskKind  # numba kernels (+0.54 s), as above

    if not flagged:
        return "", 0
    tables = [t for t in evidence if t.num_rows]
    ev = (pa.concat_tables(tables) if tables
          else _flagged_rows(EVIDENCE_SCHEMA.empty_table(), flagged))
    k = np.asarray(ev.column("k").to_numpy(), np.int64)
    ts = np.asarray(ev.column("ts_ms").to_numpy(), np.int64)
    batch = np.asarray(ev.column("batch").to_numpy(), np.int64)
    row = np.asarray(ev.column(BATCH_ROW).to_numpy(), np.int64)
    order = np.lexsort((row, batch, ts, k))
    k, ts = k[order], ts[order]
    seq = np.asarray(ev.column("device_seq").to_numpy(), np.int64)[order]
    city = np.asarray(ev.column("city").to_numpy(), np.int64)[order]
    cuts = np.searchsorted(k, np.arange(len(flagged) + 1))
    rows = []
    for g, (op, dev) in enumerate(flagged):
        lo, hi = int(cuts[g]), int(cuts[g + 1])
        rows.append({"service_day": day, "kind": RiskKind.DEBIT_MISMATCH.name, "issuer": None,
                     "card_id": None, "operator": op, "device_id": dev,
                     "city": int(city[hi - 1]) if hi > lo else 0,
                     "ts_ms": int(ts[hi - 1]) if hi > lo else 0,
                     "evidence": [{"service_day": day, "operator": op, "device_id": dev,
                                   "device_seq": int(q)} for q in seq[lo:hi].tolist()]})
    fs, root = filesystem(url)
    rel = device_signals_relpath(day, run)
    _write_table(fs, _join(root, rel), pa.Table.from_pylist(rows, schema=SIGNAL_SCHEMA))
    return rel, len(rows)


# --------------------------------------------------------------------------- the coordinator


@dataclass(frozen=True, slots=True)
class BatchFile:
    """A committed batch file of the day, as the coordinator lists it: a path, no taps."""

    rel: str  # under the storage root (the data directory's layout)
    day_seq: int | None  # None: read from the file by its split task
    rows: int  # its taps (the database's count, or the file's footer)
    day: dt.date | None = None  # an earlier day's file (for replays); None: the day cleared


@dataclass(frozen=True, slots=True)
class ClusterRun:
    """What a partitioned clear did on the cluster: small, whatever the size of the day."""

    run: str
    splits: tuple[Split, ...]
    parts: tuple[PartitionResult, ...]
    summary: Any  # the merged sums (None without a summary or with unpriceable taps)
    seconds: tuple[tuple[str, float], ...] = ()  # wall time of each stage, as the coordinator saw
    earlier: tuple[Split, ...] = ()  # splits of the earlier days' files a replay reaches
    devices_path: str = ""  # the day's DEBIT_MISMATCH signals ("" when no device raises it)
    device_signals: int = 0

    @property
    def signals(self) -> int:
        return sum(p.stats.signals for p in self.parts) + self.device_signals

    @property
    def signal_paths(self) -> list[str]:
        """The run's signal files, under the storage root: the partitions', then the day's
        DEBIT_MISMATCH file (``read_signal_parts`` puts their rows in canonical order)."""
        paths = [p.stats.signals_path for p in self.parts if p.stats.signals_path]
        return [*paths, self.devices_path] if self.devices_path else paths

    @property
    def taps(self) -> int:
        return sum(p.stats.taps for p in self.parts)

    @property
    def legs(self) -> int:
        return sum(p.stats.legs for p in self.parts)

    @property
    def unpriceable_count(self) -> int:
        return sum(p.unpriceable_count for p in self.parts)

    def unpriceable(self, listed: int) -> list[Unpriceable]:
        """The first ``listed`` unpriceable taps of the day by (batch, row)."""
        found = [u for p in self.parts for u in p.unpriceable]
        return sorted(found, key=lambda u: (u[1], u[2]))[:listed]


def clear_on_cluster(
    client: Any, url: str, day: dt.date, batches: Sequence[BatchFile], tariffs: TariffSet,
    partitions: int, revision: int, summary: LegSummary | None, listed: int,
    earlier: Sequence[BatchFile] = (),
) -> ClusterRun:
    """Split the day's batch files, then price its partitions and compute their risk signals,
    on the cluster of ``client``.

    ``earlier`` are the stored batch files a replay into ``day`` reaches (each with its
    ``day``): they are split into card buckets too (once: a later clear, or the clear of
    their own day, reuses the split) so each partition reads its own cards' earlier keys and
    no other. Sends only paths, partition numbers and the tariff set (scattered once to every
    worker); receives only small results: counts, partial sums and per-device leg counts.
    The evidence of DEBIT_MISMATCH stays on the workers (``device_signals``).
    ``partitions`` is capped at ``BUCKETS``.
    """
    partitions = max(1, min(partitions, BUCKETS))
    start = time.perf_counter()
    pieces = [(i, b, lo, min(lo + PIECE_ROWS, b.rows))
              for i, b in enumerate([*batches, *earlier]) for lo in range(0, b.rows, PIECE_ROWS)]
    futures = client.map(split_batch, [url] * len(pieces),
                         [b.day or day for _, b, _, _ in pieces],
                         [b.rel for _, b, _, _ in pieces], [b.day_seq for _, b, _, _ in pieces],
                         [lo for _, _, lo, _ in pieces], [hi for _, _, _, hi in pieces],
                         [b.rows for _, b, _, _ in pieces],
                         [b.day is not None for _, b, _, _ in pieces], pure=False)
    done: list[Split] = client.gather(futures)
    split_s = time.perf_counter() - start
    own = [(i, s) for (i, b, _, _), s in zip(pieces, done, strict=True) if b.day is None]
    back = [(b.day, s) for (_, b, _, _), s in zip(pieces, done, strict=True)
            if b.day is not None and s.key]
    run = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
    plans = [[(split_relpath(day, s.key), i, groups) for i, s in own
              if (groups := s.row_groups(partition_buckets(p, partitions)))]
             for p in range(partitions)]
    replays = [[(split_relpath(when, s.key), when, groups) for when, s in back
                if (groups := s.row_groups(partition_buckets(p, partitions)))]
               for p in range(partitions)]
    shared = client.scatter(tariffs, broadcast=True)
    futures = [client.submit(price_partition, url, day, p, plans[p], tariffs=shared,
                             revision=revision, run=run, summary=summary, listed=listed,
                             earlier=replays[p], pure=False) for p in range(partitions)]
    # the partitions' small results; their evidence stays where it was computed
    parts: list[PartitionResult] = client.gather(
        client.map(PartitionResult.small, futures, pure=False))
    price_s = time.perf_counter() - start - split_s
    merged, devices_path, device_count = None, "", 0
    if not any(p.unpriceable_count for p in parts):
        if summary is not None:
            merged = summary.merge([p.summary for p in parts], day)
        flagged = flagged_devices([p.devices for p in parts if p.devices is not None])
        if flagged:
            keys = [(o, d) for o, d, _, _ in flagged]
            picked = client.map(flagged_evidence, futures, flagged=keys, pure=False)
            devices_path, device_count = client.submit(
                device_signals, url, day, run, keys, picked, pure=False).result()
            del picked
    del futures
    return ClusterRun(run, tuple(s for _, s in own), tuple(parts), merged,
                      (("split", split_s), ("price", price_s),
                       ("merge", time.perf_counter() - start - split_s - price_s)),
                      tuple(s for _, s in back), devices_path, device_count)


# --------------------------------------------------------------------------- reading, tidying


def read_parts(url: str, parts: Sequence[str]) -> pa.Table:
    """A partitioned day's legs in canonical order (``LEG_SORT_KEYS``), as one table.

    Each part holds whole cards in canonical order; the cards of different parts interleave
    in it, so the concatenation is sorted once (the same order the single-process run writes).
    """
    tables = _read_part_files(url, parts, LEG_SCHEMA, "legs")
    if not tables:
        return LEG_SCHEMA.empty_table()
    return sort_legs(pa.concat_tables(tables).replace_schema_metadata(None))


def _read_part_files(url: str, parts: Sequence[str], schema: pa.Schema, what: str
                     ) -> list[pa.Table]:
    """The run's part files of one kind as tables; a file gone means the day was cleared again
    while it was read (its run was superseded and removed): STATE_CONFLICT, read again."""
    fs, root = filesystem(url)
    tables = []
    for rel in parts:
        try:
            with fs.open_input_file(_join(root, rel)) as f:
                tables.append(pq.read_table(f, schema=schema))
        except FileNotFoundError:
            raise StateError(f"a {what} file of the day is gone ({rel}): the day was cleared "
                             "again meanwhile; read it again",
                             code=ErrorCode.STATE_CONFLICT) from None
    return tables


def read_signal_parts(url: str, parts: Sequence[str]) -> pa.Table:
    """A partitioned day's risk signals in canonical order, as the single-process clear
    writes them (``clearing.risk``: by kind, issuer, card, operator, device, time).

    Each part is in that order and holds whole cards (the day's DEBIT_MISMATCH signals, one
    per device, are a part of their own); rows that tie on the key are one card's, so a
    stable sort of the parts put together is the single-process table.
    """
    from clearing.risk import SIGNAL_SCHEMA, RiskKind  # numba kernels (+0.54 s), as above

    tables = _read_part_files(url, parts, SIGNAL_SCHEMA, "signals")
    if not tables:
        return SIGNAL_SCHEMA.empty_table()
    table = pa.concat_tables(tables).replace_schema_metadata(None)
    if len(tables) == 1:
        return table
    rank = {k.name: int(k) for k in RiskKind}
    kind = np.array([rank[k] for k in table.column("kind").to_pylist()], np.int64)

    def col(name: str) -> np.ndarray:
        return np.asarray(table.column(name).fill_null(0).to_numpy(), np.int64) if (
            name != "card_id") else np.asarray(table.column(name).fill_null(0).to_numpy())

    order = np.lexsort((col("ts_ms"), col("device_id"), col("operator"), col("card_id"),
                        col("issuer"), kind))
    return table.take(pa.array(order))


def remove_runs(url: str, day: dt.date, keep: str | None = None) -> list[str]:
    """Delete the day's partitioned legs runs except ``keep`` (after a commit, or when the day
    was cleared on one machine): crash leftovers and superseded runs."""
    fs, root = filesystem(url)
    removed = []
    for info in fs.get_file_info(pafs.FileSelector(_join(root, f"legs/day={day.isoformat()}"),
                                                   allow_not_found=True)):
        name = PurePosixPath(info.path).name
        if info.type == pafs.FileType.Directory and name.startswith("run=") and (
                name != f"run={keep}"):
            fs.delete_dir(info.path)
            removed.append(info.path)
    return removed


def remove_run(url: str, day: dt.date, run: str) -> None:
    """Delete one run's part files (a run that was not committed)."""
    fs, root = filesystem(url)
    with suppress(FileNotFoundError):
        fs.delete_dir(_join(root, run_dir(day, run)))


def remove_stale_splits(url: str, day: dt.date, live: set[str], last_day_seq: int) -> list[str]:
    """Delete splits of batch files that are no longer the day's (withdrawn batches, files
    rewritten by re-acceptance, crash orphans): keys not in ``live`` whose day sequence is at
    most ``last_day_seq``. A later sequence may be a batch stored since the listing, which a
    concurrent clear may be splitting: it is left alone."""
    fs, root = filesystem(url)
    stale = []
    for info in fs.get_file_info(pafs.FileSelector(_join(root, cards_dir(day)),
                                                   allow_not_found=True)):
        name = PurePosixPath(info.path).name
        if info.type != pafs.FileType.File or not name.endswith(".parquet"):
            continue  # a temporary file of a split being written is its writer's
        key = name.removesuffix(".parquet")
        seq = key.split("-", 1)[0]
        if key not in live and seq.isdigit() and int(seq) <= last_day_seq:
            fs.delete_file(info.path)
            stale.append(key)
    return stale
