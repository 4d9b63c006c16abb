"""The fast path of matching and pricing (SPEC §5-§6): a thin, checking wrapper around the kernels.

``match_and_price_fast`` has the contract of ``clearing.reference.match_and_price``: accepted,
de-duplicated taps of any service days in, one ``LEG_SCHEMA`` row per leg out, sorted by
``LEG_SORT_KEYS``; it is tested equal to the reference field by field. This module is the
imperative shell: it checks column names, dtypes, nulls and lengths (raising with a fix hint),
allocates every array, runs the sort and the two kernels, and turns a kernel status code into
an exception. No Python object is made per tap.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from functools import partial

import numpy as np
import pyarrow as pa

from clearing import kernels
from clearing.errors import InputError, TongkaError
from clearing.kernel_tables import KernelTables, kernel_tables
from clearing.legs import LEG_COLUMNS, LEG_SCHEMA, LEG_TYPES
from clearing.sorting import W_ROW, record_tap, run_parallel, sort_tap_records
from clearing.taps import TAP_SCHEMA
from tariffs.load import TariffSet

# The tap columns matching and pricing read (SPEC §3); ``city`` and ``device_seq`` served
# acceptance and de-duplication (SPEC §4) and are not needed any more.
NEEDED_COLUMNS: tuple[str, ...] = (
    "operator", "device_id", "card_id", "card_seq", "issuer", "product", "media", "ts_ms",
    "line", "stop", "tap_type", "debited_fen",
)
_LEG_DTYPES = {name: np.dtype(t.to_pandas_dtype()) for name, t in LEG_TYPES.items()}


class PricingError(TongkaError):
    """The kernels met taps the tariff set cannot price (the reference raises there too)."""

    code = "PRICING_FAILED"
    exit_code = 2


def match_and_price_fast(taps: pa.Table, tariffs: TariffSet) -> pa.Table:
    """Match and price accepted, de-duplicated taps of any service days; one row per leg.

    Same contract and same result as ``clearing.reference.match_and_price``.
    """
    return match_and_price_chunks(tap_chunks(taps), kernel_tables(tariffs))


def match_and_price_sorted(taps: pa.Table, tariffs: TariffSet) -> tuple[pa.Table, np.ndarray]:
    """``match_and_price_fast``'s legs, and the sorted tap records pricing read them from.

    The records are ``clearing.sorting.sort_tap_records`` of the taps: uint64[n, TAP_WORDS],
    in card order, each record's ``W_ROW`` the tap's row in ``taps`` counted across its chunks
    (row groups, concatenated files): row r of any table with the rows of ``taps`` in the same
    order (the day's taps with ``balance_fen``, before pricing's column selection) is the tap
    of the record whose ``W_ROW`` is r. ``clearing.risk`` takes them as ``records=`` and skips
    sorting the day again. Nothing more is computed than for ``match_and_price_fast``; the
    records (64 bytes a tap) just outlive the call.
    """
    return _match_and_price(tap_chunks(taps), kernel_tables(tariffs), None)


Chunk = dict[str, np.ndarray]  # one consecutive piece of the input: column -> numpy array
Source = list[Chunk] | np.ndarray  # where a failing input row's values are found: the chunks,
# or only the sorted records (a day read straight into them, clearing.sorted_day)


def tap_chunks(taps: pa.Table) -> list[Chunk]:
    """The needed tap columns as numpy arrays of the TAP_SCHEMA dtypes, chunk by chunk.

    Zero-copy: a table read from Parquet comes in row groups, and concatenating ten million
    rows would only double the memory. Raises ``InputError`` naming the column and the fix
    when a column is missing, of another type or holds nulls.
    """
    if not isinstance(taps, pa.Table):
        raise InputError(f"taps must be a pyarrow Table, not {type(taps).__name__}: build one "
                         "with clearing.taps.taps_table or read a batch Parquet file")
    for name in NEEDED_COLUMNS:
        want = TAP_SCHEMA.field(name).type
        if name not in taps.column_names:
            raise InputError(f"taps have no column {name!r}: give every TAP_SCHEMA column "
                             "(clearing.taps.TAP_SCHEMA)", code="TAPS_MISSING_COLUMN")
        column = taps.column(name)
        if column.type != want:
            raise InputError(f"taps column {name!r} is {column.type}, expected {want}: cast the "
                             "table with taps.cast(clearing.taps.TAP_SCHEMA)",
                             code="TAPS_WRONG_TYPE")
        if column.null_count:
            raise InputError(f"taps column {name!r} has {column.null_count} nulls: every tap "
                             "field is required (SPEC §3); quarantine those rows at ingestion",
                             code="TAPS_NULL")
    table = taps.select(list(NEEDED_COLUMNS))
    layouts = {tuple(len(c) for c in table.column(name).chunks) for name in NEEDED_COLUMNS}
    if len(layouts) > 1:  # columns chunked differently (a hand-built table): align them once
        table = table.combine_chunks()
    chunks = [{name: batch.column(i).to_numpy(zero_copy_only=False)
               for i, name in enumerate(NEEDED_COLUMNS)}
              for batch in table.to_batches() if batch.num_rows]
    for chunk in chunks:
        if len({len(a) for a in chunk.values()}) > 1:  # impossible for a pyarrow table
            raise InputError("taps columns differ in length", code="TAPS_RAGGED")
    return chunks


def tap_arrays(taps: pa.Table) -> Chunk:
    """All rows as one chunk (concatenated): for tests and the kernel registry."""
    chunks = tap_chunks(taps)
    if len(chunks) == 1:
        return chunks[0]
    if not chunks:
        return {name: np.empty(0, dtype=TAP_SCHEMA.field(name).type.to_pandas_dtype())
                for name in NEEDED_COLUMNS}
    return {name: np.concatenate([c[name] for c in chunks]) for name in NEEDED_COLUMNS}


def match_and_price_chunks(chunks: list[Chunk], tb: KernelTables,
                           threads: int | None = None) -> pa.Table:
    """Sort, match and price taps given as chunks of numpy arrays (see ``tap_chunks``).

    The records are cut at card-day boundaries into one part per thread: a card-day never
    needs another's taps (ARCHITECTURE "Scale"), so each part is matched and priced alone,
    into its own slice of the output columns.
    """
    return _match_and_price(chunks, tb, threads)[0]


def _match_and_price(chunks: list[Chunk], tb: KernelTables, threads: int | None
                     ) -> tuple[pa.Table, np.ndarray]:
    """``match_and_price_chunks``, with the sorted records it priced (never written to)."""
    n = sum(len(c["card_id"]) for c in chunks)
    threads = thread_count(n) if threads is None else max(1, threads)
    records = sort_tap_records(chunks, threads=threads)
    return _price_records(records, tb, chunks, threads), records


def _price_records(records: np.ndarray, tb: KernelTables, chunks: Source, threads: int,
                   into: dict[str, np.ndarray] | None = None, at: int = 0,
                   boards: np.ndarray | None = None, base: int = 0) -> pa.Table:
    """The legs of sorted records that begin and end on card-day boundaries.

    The records are cut at card-day boundaries into one part per thread: a card-day never
    needs another's taps (ARCHITECTURE "Scale"), so each part is matched and priced alone,
    into its own slice of the output columns. A column named in ``into`` is priced straight
    into that array from row ``at`` on (``RangePricer``'s kept columns), the others into
    arrays of their own. ``boards``, when given, gets each leg's boarding record (its position
    in the day's records: ``base`` + its place in ``records``) from row ``at`` on.
    """
    n = records.shape[0]
    cuts = sorted({0, n, *(int(kernels.card_day_start(records, n * k // threads))
                           for k in range(1, threads))})
    starts = [a for a, b in zip(cuts, cuts[1:], strict=False) if a < b]
    parts = [records[a:b] for a, b in zip(cuts, cuts[1:], strict=False) if a < b]
    matched = run_parallel([partial(match_records, part, tb, chunks) for part in parts])
    n_legs = sum(m[0] for m in matched)
    into = into or {}
    columns: list[np.ndarray] = [into[c][at:at + n_legs] if c in into
                                 else np.empty(n_legs, dtype=_LEG_DTYPES[c]) for c in LEG_COLUMNS]
    jobs: list[partial[tuple[int, int]]] = []
    done = 0
    for a, part, (k, board, exit_, leg_status) in zip(starts, parts, matched, strict=True):
        piece = kernels.LegArrays(*(column[done:done + k] for column in columns))  # views
        if boards is not None:
            boards[at + done:at + done + k] = board + (base + a)
        jobs.append(partial(kernels.price_legs, k, board, exit_, leg_status, part, tb, piece))
        done += k
    del matched
    for status, row in run_parallel(jobs):
        _check(status, row, chunks)
    return pa.Table.from_arrays([pa.array(column) for column in columns], schema=LEG_SCHEMA)


RANGE_TAPS = 1 << 20  # taps priced at a time by ``RangePricer``: about 100 MB of legs


class RangePricer:
    """``match_and_price_sorted`` a range of whole card-days at a time (issue 13).

    The day's taps are sorted once into records (card order, as ``match_and_price_sorted``);
    ``legs()`` then matches and prices them ``range_taps`` taps at a time, each range cut at
    the next card-day boundary (the boundaries the threaded path already cuts at: no chain,
    transfer or daily cap crosses them), and yields each range's leg table. The ranges' legs
    put end to end are ``match_and_price_sorted``'s legs, row for row, so a writer can stream
    them and drop each range once written: only the ``keep`` columns of every leg stay, as one
    table (``kept()``), written straight by the kernels into day-long arrays (allocated for a
    leg per tap, they take memory only as far as they are filled).
    """

    def __init__(self, taps: pa.Table | None, tariffs: TariffSet, *, keep: tuple[str, ...] = (),
                 range_taps: int | None = None, threads: int | None = None,
                 records: np.ndarray | None = None) -> None:
        if (taps is None) == (records is None):
            raise ValueError("RangePricer prices a table of taps or their sorted records")
        self._tb = kernel_tables(tariffs)
        if records is not None:  # sorted already (clearing.sorted_day): the table is gone
            self._source: list[Chunk] | np.ndarray = records
            n = records.shape[0]
            self._threads = thread_count(n) if threads is None else max(1, threads)
            self.records = records
        else:
            chunks = tap_chunks(taps)
            self._source = chunks
            n = sum(len(c["card_id"]) for c in chunks)
            self._threads = thread_count(n) if threads is None else max(1, threads)
            self.records = sort_tap_records(chunks, threads=self._threads)
        self._range = max(1, RANGE_TAPS if range_taps is None else range_taps)
        self._keep = {c: np.empty(n, dtype=_LEG_DTYPES[c]) for c in keep}
        # each leg's boarding record (a leg per tap at most), kept with the kept columns: the
        # signals find a leg's boarding tap there instead of probing the records for its key
        self._boards = np.empty(n if keep else 0, dtype=np.int32 if n < 2**31 else np.int64)
        self.n_legs = 0

    def legs(self) -> Iterator[pa.Table]:
        """Each range's legs, in order; the ``keep`` columns are kept as they are priced."""
        records = self.records
        n = records.shape[0]
        start = 0
        while start < n:
            end = n if start + self._range >= n else int(
                kernels.card_day_start(records, start + self._range))
            piece = _price_records(records[start:end], self._tb, self._source, self._threads,
                                   self._keep, self.n_legs,
                                   self._boards if len(self._boards) else None, start)
            self.n_legs += piece.num_rows
            start = end
            yield piece

    def boards(self) -> np.ndarray:
        """Each leg priced so far: the position of its boarding tap's record in ``records``
        (kept only when some columns are); no copy."""
        return self._boards[:self.n_legs]

    def kept(self) -> pa.Table:
        """The ``keep`` columns of every leg priced so far (all of them once ``legs()`` ran
        out), typed as in ``LEG_SCHEMA``; no copy."""
        return pa.Table.from_arrays(
            [pa.array(a[:self.n_legs]) for a in self._keep.values()],
            schema=pa.schema([LEG_SCHEMA.field(c) for c in self._keep]))


THREADS_ENV = "TONGKA_THREADS"
PARALLEL_MIN_TAPS = 200_000  # below this, threads cost more than they save


def thread_count(n_taps: int) -> int:
    """Threads for a day of ``n_taps``: ``TONGKA_THREADS``, else one per CPU (1 for small days)."""
    configured = os.environ.get(THREADS_ENV, "")
    if configured:
        return max(1, int(configured))
    if n_taps < PARALLEL_MIN_TAPS:
        return 1
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
               else (os.cpu_count() or 1))


def match_records(records: np.ndarray, tb: KernelTables, chunks: Source
                  ) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    """SPEC §5 on tap records in card order: (n_legs, boarding and exit record positions, the
    exit -1 when the leg has none, LegStatus)."""
    n = records.shape[0]
    position = np.int32 if n < 2**31 else np.int64  # 80 MB less at ten million taps
    leg_board = np.empty(n, dtype=position)
    leg_exit = np.empty(n, dtype=position)
    leg_status = np.empty(n, dtype=np.uint8)
    n_legs, status, row = kernels.match_legs(records, tb, leg_board, leg_exit, leg_status)
    _check(status, row, chunks)
    return n_legs, leg_board[:n_legs], leg_exit[:n_legs], leg_status[:n_legs]


_HINTS = {
    kernels.UNKNOWN_LINE: "the tap's (operator, line) is not in the registry: only taps accepted "
                          "by ingestion (SPEC §4) can be priced",
    kernels.NO_VERSION: "no tariff version of the line's area is in force on the tap's service "
                        "day: add a version with an earlier valid_from",
    kernels.NETWORK_NOT_PRICED: "an ENTRY/EXIT leg on a flat line, or on a network the tariff "
                                "version does not price: check the tap_type and the tariff's "
                                "networks",
    kernels.LINE_NOT_PRICED: "a FLAT leg on a line with no flat fare (a FLAT tap on an "
                             "entry-exit network?): check the tap_type and the tariff's line_fares",
    kernels.STOP_NOT_IN_NETWORK: "a journey's stop is not a stop of its network: only taps "
                                 "accepted by ingestion (SPEC §4) can be priced",
    kernels.NO_PRICE: "the tariff version has no ORDINARY price for the leg's mode",
}


def _check(status: int, row: int, chunks: Source) -> None:
    if status == kernels.OK:
        return
    tap: dict[str, int] = {}
    if isinstance(chunks, np.ndarray):  # only the sorted records: the row's own record
        found = np.flatnonzero(chunks[:, W_ROW] == np.uint64(row))
        tap = record_tap(chunks, int(found[0]), NEEDED_COLUMNS) if len(found) else {}
        chunks = []
    at = row
    for chunk in chunks:  # the input row's values, for the message
        size = len(chunk["card_id"])
        if 0 <= at < size:
            tap = {name: int(a[at]) for name, a in chunk.items()}
            break
        at -= size
    raise PricingError(f"cannot price input row {row} {tap}: {_HINTS[status]}",
                       code=kernels.STATUS_NAMES[status])
