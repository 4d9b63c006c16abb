"""A service day's taps read straight into pricing's sorted records, file by file (issue 13).

``tongka clear`` used to read the day's taps as one Arrow table (about 70 bytes a tap) and
sort them into records (64 bytes a tap) beside it, and the table stayed until the risk
signals were done: at fifteen million taps the two held 2.2 GB of the clear's 3.5 GB peak.
Pricing reads only the records, and the signals read the records, ``balance_fen`` and a few
rows' other fields. So ``read_sorted_day`` reads the stored tap files twice, one at a time:
first the card ids, times and (operator, line) pairs (what the counting sort and the
priceability check need before anything is placed), then each file's record columns, which
are scattered into the records and dropped. What stays is the records, the balances and the
list of files, where the few rows that signals name are read back (``take``).

The records are ``clearing.sorting.sort_tap_records`` of ``read_day_taps``'s table, byte for
byte (rows counted in acceptance order across the files, ``W_ROW``), so everything computed
from them is what the table gave.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from numba import njit
from sqlalchemy import Engine

from clearing.fast import thread_count
from clearing.read_ahead import read_ahead
from clearing.sorting import (
    RECORD_COLUMNS,
    W_ROW,
    record_fields,
    sort_tap_records_streamed,
)
from clearing.taps import BALANCE_UNKNOWN, balances
from clearing.tapstore import CARD_KEY, day_tap_paths, read_stored_rows, read_tap_file

# what the first read takes of each file: the sort's bucket counts and ts offset, and the
# distinct (operator, line) pairs the priceability check needs (clearing.day)
FIRST_COLUMNS = ("card_id", "ts_ms", "operator", "line")


@dataclass(eq=False)
class SortedDay:
    """A day's accepted taps as sorted records, their balances and the files they came from.

    ``records`` are ``sort_tap_records`` of the day's taps in acceptance order; ``balance``
    is ``balance_fen`` in that order, None when no tap has one (the signals skip
    BALANCE_BREAK's arithmetic then, as for a table without the column); ``pairs`` the
    day's distinct (operator, line). ``take`` reads any tap column of a few rows back from
    the files. Equality is identity: a lookback serves the day it was started with.
    """

    day: dt.date
    records: np.ndarray
    balance: np.ndarray | None
    files: tuple[tuple[Path, int], ...]  # (stored tap file, its rows), acceptance order
    pairs: tuple[np.ndarray, np.ndarray]  # distinct (operator, line), uint16 and uint32
    _inverse: np.ndarray | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def num_rows(self) -> int:
        return int(self.records.shape[0])

    def take(self, rows: np.ndarray, columns: Sequence[str]) -> dict[str, np.ndarray]:
        """Some rows' columns (any ``FULL_TAP_SCHEMA`` column): what a record holds from the
        records, ``balance_fen`` from the balances, the rest (``city``, ``device_seq``) read
        back from the stored files, only the row groups holding the rows."""
        rows = np.asarray(rows, np.int64)
        if len(rows) and (int(rows.min()) < 0 or int(rows.max()) >= self.num_rows):
            raise ValueError(f"rows outside the day's {self.num_rows} taps")
        held = [c for c in columns if c in RECORD_COLUMNS]
        out = read_stored_rows(self.files, rows, [c for c in columns if c not in held
                                                  and c != "balance_fen"])
        if held:
            out.update(record_fields(self.records[self._positions()[rows].astype(np.int64)],
                                     held))
        if "balance_fen" in columns:
            out["balance_fen"] = (np.full(len(rows), BALANCE_UNKNOWN, np.int64)
                                  if self.balance is None else self.balance[rows])
        return {c: out[c] for c in columns}

    def card_keys(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """The card key (issuer, card_id, card_seq) of some rows, from their records: the
        replay lookback asks this once per earlier day, so no file is read for it."""
        return self.take(rows, CARD_KEY)

    def key_columns(self) -> dict[str, np.ndarray]:
        """The card key columns of every tap in acceptance order (the replay lookback of a day
        whose earlier days have no digest streams their keys through a table of these):
        unpacked in record order and put in place by ``W_ROW``, never a copy of the records."""
        rows = self.records[:, W_ROW].astype(np.int64)
        out = {}
        for name, values in record_fields(self.records, CARD_KEY).items():
            out[name] = np.empty_like(values)
            out[name][rows] = values
        return out

    def _positions(self) -> np.ndarray:
        """Each table row's record (the inverse of ``W_ROW``), made once on first use."""
        with self._lock:
            if self._inverse is None:
                self._inverse = _inverse_rows(self.records)
            return self._inverse


def read_sorted_day(data_dir: Path, day: dt.date, engine: Engine | None = None,
                    threads: int | None = None) -> SortedDay:
    """The day's stored taps (``read_day_taps``'s files) as a ``SortedDay``.

    Memory: the records, the balances, the card ids (until the sort ends) and one file's
    columns at a time. A file that changes between the two reads (it never should: a stored
    batch file is immutable) raises ``ValueError`` from the sort, not wrong records.
    ``threads`` sort side by side (default: as pricing, ``clearing.fast.thread_count``).
    """
    paths = day_tap_paths(data_dir, day, engine)
    groups = [(p, g) for p in paths for g in range(_row_groups(p))]  # the sort's chunks
    card_ids: list[np.ndarray] = []
    span: list[int] = []  # the smallest and largest ts_ms so far
    pairs: set[tuple[int, int]] = set()
    for table in read_ahead((_read_group(p, g, FIRST_COLUMNS) for p, g in groups),
                            depth=1, name="clear-read-keys"):
        card_ids.append(np.ascontiguousarray(table.column("card_id").to_numpy()))
        if table.num_rows:
            lo, hi = (int(v.as_py()) for v in pc.min_max(table.column("ts_ms")).values())
            span = [lo, hi] if not span else [min(span[0], lo), max(span[1], hi)]
            grouped = table.select(["operator", "line"]).group_by(["operator", "line"]
                                                                  ).aggregate([])
            pairs.update(zip(grouped.column("operator").to_pylist(),
                             grouped.column("line").to_pylist(), strict=True))
        del table
    counts = [len(c) for c in card_ids]
    n_taps = sum(counts)
    balance = np.full(n_taps, BALANCE_UNKNOWN, np.int64)
    starts = np.cumsum([0, *counts])

    def chunks() -> Iterator[dict[str, np.ndarray]]:
        for k, table in enumerate(read_ahead((_read_group(p, g, _RECORD_READ) for p, g in groups),
                                             depth=1, name="clear-read-taps")):
            if table.num_rows != counts[k]:
                raise ValueError(f"{groups[k][0]}: row group {groups[k][1]} holds "
                                 f"{table.num_rows} taps, {counts[k]} a moment ago")
            balance[starts[k]:starts[k + 1]] = balances(table)  # -1 where none stored
            yield {c: table.column(c).to_numpy() for c in RECORD_COLUMNS}

    tmin, tmax = span or [0, 0]
    threads = thread_count(n_taps) if threads is None else max(1, threads)
    records = sort_tap_records_streamed(card_ids, tmin, tmax, chunks(), threads=threads)
    del card_ids
    pa.default_memory_pool().release_unused()  # the reads' buffers, kept by the allocator
    ordered = sorted(pairs)
    rows_of = dict.fromkeys(paths, 0)
    for (path, _), n in zip(groups, counts, strict=True):
        rows_of[path] += n
    files = tuple(rows_of.items())
    return SortedDay(
        day, records, balance if n_taps and int(balance.max()) >= 0 else None, files,
        (np.array([o for o, _ in ordered], np.uint16),
         np.array([line for _, line in ordered], np.uint32)))


_RECORD_READ = (*RECORD_COLUMNS, "balance_fen")


def _row_groups(path: Path) -> int:
    if not path.is_file():
        read_tap_file(path)  # raises TAPSTORE_MISSING
    return int(pq.read_metadata(path).num_row_groups)


def _read_group(path: Path, group: int, columns: Sequence[str]) -> pa.Table:
    """One row group of a stored tap file (one chunk per column: numpy views, no copy);
    ``balance_fen`` only where stored (files written before v1.2 have none)."""
    stored = pq.ParquetFile(path)
    names = set(stored.schema_arrow.names)
    return stored.read_row_group(group, columns=[c for c in columns if c in names])


def _inverse_rows(records: np.ndarray) -> np.ndarray:
    """uint32 where it fits (60 MB at fifteen million taps, not 120)."""
    n = records.shape[0]
    out = np.empty(n, np.uint32 if n < (1 << 32) else np.int64)
    _fill_inverse(records, out)
    return out


@njit(cache=True, nogil=True)
def _fill_inverse(records: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover
    for i in range(records.shape[0]):
        out[records[i, W_ROW]] = i
