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
   by the application: clearing must not import settlement).

The coordinator lists the batch files (paths, from the database or the directory), scatters
the tariff set once, sends paths and partition numbers, and adds up the partial sums; it never
reads a tap or a leg. ``clearing.day`` then commits the run by replacing ``legs.parquet`` with
a manifest naming the parts, so readers see the old legs or the new ones, never a mix.

Files are read and written through pyarrow filesystems, so the same code runs on a local
directory (atomic: temporary name, fsync, rename) or an fsspec URL such as ``s3://`` (where a
whole object appears at once on upload). ``tests/test_scaleout_identity.py`` holds a
partitioned clear and settlement equal to the single-process one.
"""

from __future__ import annotations

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
from typing import IO, Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from clearing.errors import ErrorCode, StateError, TongkaError
from clearing.files import TMP_SUFFIX, atomic_file
from clearing.legs import LEG_SCHEMA, sort_legs
from clearing.taps import FULL_TAP_SCHEMA, TAP_COLUMNS, with_optional_columns
from tariffs.load import TariffSet

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
    try:
        import dask.distributed  # noqa: F401
    except ImportError as exc:
        raise ScaleNotInstalledError(
            f"clearing on partitions needs dask.distributed, which is not installed ({exc}): "
            "install the scale extra, `pip install 'tongka[scale]'`, or clear without "
            "--partitions", code=ErrorCode.SCALE_NOT_INSTALLED) from None


def local_client(workers: int, **cluster: Any):  # type: ignore[no-untyped-def]
    """A dask.distributed client on a cluster of ``workers`` local processes (one thread each),
    listening on 127.0.0.1 only (its dashboard on a free port: several clusters may run)."""
    require_dask()
    from dask.distributed import Client, LocalCluster

    options = {"threads_per_worker": 1, "processes": True, "dashboard_address": "127.0.0.1:0",
               **cluster}
    if options["processes"]:  # in-process workers talk over inproc://, no socket
        options.setdefault("host", "127.0.0.1")
    return Client(LocalCluster(n_workers=workers, **options))


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
    import fsspec

    fs, root = fsspec.core.url_to_fs(url)
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), root.rstrip("/")


def _join(root: str, rel: str) -> str:
    return f"{root}/{rel}"


def _exists(fs: pafs.FileSystem, path: str) -> bool:
    return fs.get_file_info(path).type != pafs.FileType.NotFound


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
            yield out  # type: ignore[misc]
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
                rows: int) -> Split:
    """Split rows ``start:stop`` of one stored batch file of ``day`` into card buckets, unless
    an earlier clear did; a task of its own on a worker.

    ``day_seq`` is the batch's place in the day (None: read from the file's metadata) and
    ``rows`` its taps as the coordinator listed them: a file that holds another number is a
    state conflict, never a silently partial day. The split is one file, written whole or not
    at all, so its existence says it is complete.
    """
    began = time.perf_counter()
    fs, root = filesystem(url)
    src = _join(root, rel)
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


@dataclass(frozen=True, slots=True)
class PartitionResult:
    stats: PartitionStats
    summary: Any  # the LegSummary's sums of this partition's legs (None without a summary)
    unpriceable: tuple[Unpriceable, ...]  # the first ``listed`` by (batch, row); no legs then
    unpriceable_count: int


def price_partition(
    url: str, day: dt.date, partition: int, files: Sequence[tuple[str, int, Sequence[int]]],
    tariffs: TariffSet, revision: int, run: str, summary: LegSummary | None, listed: int,
) -> PartitionResult:
    """Read, check, match, price and store one partition's taps; a task of its own.

    ``files`` are (split, index of its batch in the day's acceptance order, the row groups of
    the partition's buckets), in that order: each card's taps stay in acceptance order, which
    is all the fast path's stable sort needs to give the single-process legs.
    """
    from clearing.accept import day_rules
    from clearing.day import REVISION_KEY
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
        found = tuple((int(status[i]), int(batches[i]), int(rows[i]), *map(int, r.values()),
                       partition) for i, r in zip(first.tolist(), picked, strict=True))
        stats = PartitionStats(partition, n, 0, len(files), read, 0,
                               time.perf_counter() - start, "")
        return PartitionResult(stats, None, found, len(bad))  # type: ignore[arg-type]
    legs = (match_and_price_fast(taps.select(list(TAP_COLUMNS)), tariffs) if n
            else LEG_SCHEMA.empty_table())
    del taps
    legs = legs.replace_schema_metadata({REVISION_KEY: str(revision).encode(),
                                         RUN_KEY: run.encode(), PART_KEY: str(partition).encode()})
    rel = part_relpath(day, run, partition)
    written = _write_table(fs, _join(root, rel), legs)
    sums = summary.of(legs, day) if summary is not None else None
    stats = PartitionStats(partition, n, legs.num_rows, len(files), read, written,
                           time.perf_counter() - start, rel)
    return PartitionResult(stats, sums, (), 0)


# --------------------------------------------------------------------------- the coordinator


@dataclass(frozen=True, slots=True)
class BatchFile:
    """A committed batch file of the day, as the coordinator lists it: a path, no taps."""

    rel: str  # under the storage root (the data directory's layout)
    day_seq: int | None  # None: read from the file by its split task
    rows: int  # its taps (the database's count, or the file's footer)


@dataclass(frozen=True, slots=True)
class ClusterRun:
    """What a partitioned clear did on the cluster: small, whatever the size of the day."""

    run: str
    splits: tuple[Split, ...]
    parts: tuple[PartitionResult, ...]
    summary: Any  # the merged sums (None without a summary or with unpriceable taps)
    seconds: tuple[tuple[str, float], ...] = ()  # wall time of each stage, as the coordinator saw

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
) -> ClusterRun:
    """Split the day's batch files, then price its partitions, on the cluster of ``client``.

    Sends only paths, partition numbers and the tariff set (scattered once to every worker);
    receives only small results. ``partitions`` is capped at ``BUCKETS``.
    """
    partitions = max(1, min(partitions, BUCKETS))
    start = time.perf_counter()
    pieces = [(i, b, lo, min(lo + PIECE_ROWS, b.rows))
              for i, b in enumerate(batches) for lo in range(0, b.rows, PIECE_ROWS)]
    futures = client.map(split_batch, [url] * len(pieces), [day] * len(pieces),
                         [b.rel for _, b, _, _ in pieces], [b.day_seq for _, b, _, _ in pieces],
                         [lo for _, _, lo, _ in pieces], [hi for _, _, _, hi in pieces],
                         [b.rows for _, b, _, _ in pieces], pure=False)
    splits: list[Split] = client.gather(futures)
    split_s = time.perf_counter() - start
    run = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
    plans = [[(split_relpath(day, s.key), i, groups) for (i, _, _, _), s in zip(pieces, splits,
                                                                              strict=True)
              if (groups := s.row_groups(partition_buckets(p, partitions)))]
             for p in range(partitions)]
    shared = client.scatter(tariffs, broadcast=True)
    futures = client.map(price_partition, [url] * partitions, [day] * partitions,
                         list(range(partitions)), plans, tariffs=shared, revision=revision,
                         run=run, summary=summary, listed=listed, pure=False)
    parts: list[PartitionResult] = client.gather(futures)
    price_s = time.perf_counter() - start - split_s
    merged = None
    if summary is not None and not any(p.unpriceable_count for p in parts):
        merged = summary.merge([p.summary for p in parts], day)
    return ClusterRun(run, tuple(splits), tuple(parts), merged,
                      (("split", split_s), ("price", price_s),
                       ("merge", time.perf_counter() - start - split_s - price_s)))


# --------------------------------------------------------------------------- reading, tidying


def read_parts(url: str, parts: Sequence[str]) -> pa.Table:
    """A partitioned day's legs in canonical order (``LEG_SORT_KEYS``), as one table.

    Each part holds whole cards in canonical order; the cards of different parts interleave
    in it, so the concatenation is sorted once (the same order the single-process run writes).
    """
    fs, root = filesystem(url)
    tables = []
    for rel in parts:
        try:
            with fs.open_input_file(_join(root, rel)) as f:
                tables.append(pq.read_table(f, schema=LEG_SCHEMA))
        except FileNotFoundError:
            raise StateError(f"a legs file of the day is gone ({rel}): the day was cleared "
                             "again meanwhile; read it again",
                             code=ErrorCode.STATE_CONFLICT) from None
    if not tables:
        return LEG_SCHEMA.empty_table()
    return sort_legs(pa.concat_tables(tables).replace_schema_metadata(None))


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
