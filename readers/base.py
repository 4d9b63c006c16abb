"""What every reader adapter is and returns: the ``Adapter`` protocol and ``ParseResult``.

An adapter turns the bytes of one raw export into canonical taps (SPEC §3) and row errors,
with ``rows == taps.num_rows + len(errors)`` always: every record becomes exactly one of the
two, and each row error carries the record's raw bytes (``RowError.raw``) so it can be
corrected. Adapters parse bytes, never files: the caller reads a batch once (through
``clearing.input_files.read_input_bytes``, the one guard on input files), hashes those bytes and
hands the same bytes to detection and parsing, so what is stored is what was hashed. An
adapter raises only ``readers.config.ReaderConfigError`` when a key it needs is not
configured.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import pyarrow as pa

from clearing.errors import RowError
from clearing.input_files import read_input_bytes
from clearing.service_day import day_from_number, service_day_number
from clearing.taps import BALANCE_FIELD, TAP_COLUMNS, empty_taps
from readers.columns import Lines
from readers.config import ReaderConfig
from tariffs.vocab import Media

SOURCE_ROW = "source_row"  # the column name clearing.ingest reads (its SOURCE_ROW)


@dataclass(frozen=True, eq=False)
class ParseResult:
    """An adapter's output. ``operator`` and ``service_day`` are what the batch declares.

    The raw formats carry no file header, so both are inferred: the most common operator and
    service day among the parsed taps (None when no record parsed). ``source_rows[i]`` is the
    0-based row in the file of tap ``i``, so a later check on the tap table can name the line
    an operator must fix.
    """

    taps: pa.Table
    errors: list[RowError]
    operator: int | None
    service_day: dt.date | None
    rows: int = 0  # records read: == taps.num_rows + len(errors)
    source_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    lines: Lines | None = field(default=None, repr=False)  # the file's records (raw_records)
    # SPEC v1.2 §3: each tap's purse balance (int64 fen) when the format carries one; None
    # for formats without (QR: account-based), whose taps read as balance_fen -1
    balances: np.ndarray | None = field(default=None, repr=False)

    def taps_with_source_rows(self) -> pa.Table:
        """The taps plus an int64 ``source_row`` column: what ``clearing.ingest.ingest_taps``
        reads to number the rows it rejects by their line in the raw file; and ``balance_fen``
        when the format carries balances (SPEC v1.2 §3)."""
        taps = self.taps
        if self.balances is not None:
            taps = taps.append_column(BALANCE_FIELD, pa.array(self.balances, type=pa.int64()))
        return taps.append_column(SOURCE_ROW, pa.array(self.source_rows, type=pa.int64()))

    def raw_records(self, source_rows: np.ndarray | list[int]) -> list[bytes]:
        """The raw bytes of the records at these 0-based file rows, as ``RowError.raw`` has them.

        For the rows a later check rejects (SPEC §4 at ingestion: unknown stop, outside the
        day, ...): they are quarantined with their bytes as they came in, like the rows the
        adapter rejected, so that they too can be corrected. ValueError for a row that is no
        record (a blank line, past the end) or when the adapter kept no lines (a plugin).
        """
        if self.lines is None:
            raise ValueError("this parse result holds no raw records")
        want = np.asarray(source_rows, dtype=np.int64)
        idx = np.searchsorted(self.lines.rows, want)
        found = idx < len(self.lines)
        found[found] = self.lines.rows[idx[found]] == want[found]
        if not found.all():
            raise ValueError(f"rows {want[~found][:5].tolist()} are not records of this file")
        return [self.lines.raw(int(i)) for i in idx]


@runtime_checkable
class Adapter(Protocol):
    """One raw format. Registered by ``name``; plugins come from the ``tongka.readers`` group."""

    name: str  # the --format name, e.g. "card"
    media: tuple[Media, ...]  # the media whose taps this format carries
    suffix: str  # usual file suffix, e.g. ".dat"

    def sniff(self, head: bytes) -> bool:
        """Whether bytes starting at a record boundary look like this format (detection).

        ``head`` is the start of the file, or, when no format claims that (a corrupt first
        record), the bytes from a later line on: see ``readers.registry.detect_format_bytes``.
        """
        ...

    def parse_bytes(self, data: bytes, config: ReaderConfig, *, name: str = "") -> ParseResult:
        """The canonical taps and row errors of a whole file's bytes; never raise on a bad row.

        ``name`` is the file's name, for a format that needs it; the built-ins ignore it.
        """
        ...


def parse_file(adapter: Adapter, path: Path, config: ReaderConfig) -> ParseResult:
    """Parse one file (a convenience for tests and tools): read once, then ``parse_bytes``.

    The file is read by ``clearing.input_files.read_input_bytes``, so a missing, non-regular
    or oversized file gets the same code (INPUT_MISSING, INPUT_NOT_FILE, INPUT_TOO_LARGE) and
    the same size limit as a batch ingested from the command line.
    """
    path = Path(path)
    return adapter.parse_bytes(read_input_bytes(path), config, name=path.name)


def most_common(values: np.ndarray | int) -> int | None:
    """The most frequent value (the smallest on ties), or None for no values."""
    values = np.atleast_1d(np.asarray(values))
    if len(values) == 0:
        return None
    uniq, counts = np.unique(values, return_counts=True)
    return int(uniq[np.argmax(counts)])


def result(
    taps: pa.Table | None,
    errors: list[RowError],
    rows: int,
    source_rows: np.ndarray,
    lines: Lines | None = None,
) -> ParseResult:
    """Assemble a ``ParseResult``, inferring the batch's operator and service day from its taps.

    ``lines`` are the file's records, when the format is line-based (``raw_records``).
    """
    if taps is None:
        taps = empty_taps()
    balances = None
    if "balance_fen" in taps.column_names:  # kept beside the taps: ``taps`` is TAP_SCHEMA
        balances = np.asarray(taps.column("balance_fen").to_numpy(), dtype=np.int64)
        taps = taps.select(list(TAP_COLUMNS))
    if taps.num_rows + len(errors) != rows:  # the contract every caller relies on
        raise AssertionError(
            f"adapter lost rows: {rows} in, {taps.num_rows} taps + {len(errors)} errors"
        )
    operator = most_common(taps.column("operator").to_numpy())
    day_no = most_common(service_day_number(taps.column("ts_ms").to_numpy().astype(np.int64)))
    return ParseResult(
        taps=taps,
        errors=sorted(errors, key=lambda e: e.row),
        operator=operator,
        service_day=None if day_no is None else day_from_number(day_no),
        rows=rows,
        source_rows=np.asarray(source_rows, dtype=np.int64),
        lines=lines,
        balances=balances,
    )
