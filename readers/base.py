"""What every reader adapter is and returns: the ``Adapter`` protocol and ``ParseResult``.

An adapter turns one raw export file into canonical taps (SPEC §3) and row errors, with
``rows == taps.num_rows + len(errors)`` always: every record becomes exactly one of the two.
It raises only ``clearing.errors.InputError`` for a file that cannot be read at all (and
``readers.config.ReaderConfigError`` when a key it needs is not configured).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np
import pyarrow as pa

from clearing.errors import InputError, RowError
from clearing.service_day import day_from_number, service_day_number
from clearing.taps import empty_taps
from readers.config import ReaderConfig
from tariffs.vocab import Media

if TYPE_CHECKING:
    from readers.synth import Identities

SOURCE_ROW = "source_row"  # the column name clearing.ingest reads (its SOURCE_ROW)
MAX_FILE_BYTES = 8 << 30  # 8 GiB: far beyond any plausible day of one operator


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

    def taps_with_source_rows(self) -> pa.Table:
        """The taps plus an int64 ``source_row`` column: what ``clearing.ingest.ingest_taps``
        reads to number the rows it rejects by their line in the raw file."""
        return self.taps.append_column(SOURCE_ROW, pa.array(self.source_rows, type=pa.int64()))


@runtime_checkable
class Adapter(Protocol):
    """One raw format. Registered by ``name``; plugins come from the ``tongka.readers`` group."""

    name: str  # the --format name, e.g. "card"
    media: tuple[Media, ...]  # the media whose taps this format carries
    suffix: str  # usual file suffix, e.g. ".dat"

    def sniff(self, head: bytes) -> bool:
        """Whether the first bytes of a file look like this format (for format detection)."""
        ...

    def parse(self, path: Path, config: ReaderConfig) -> ParseResult:
        """Read one file into canonical taps and row errors; never raise on a bad row."""
        ...


@runtime_checkable
class RawWriter(Protocol):
    """An adapter that can also write its format (``readers.synth``, ``tongka generate --raw``)."""

    name: str
    media: tuple[Media, ...]
    suffix: str

    def writable(self, taps: pa.Table, config: ReaderConfig) -> np.ndarray:
        """Which canonical taps (of this format's media) the format can express."""
        ...

    def render(self, taps: pa.Table, ids: Identities, config: ReaderConfig) -> bytes:
        """The file bytes of ``taps``, with the cards' invented raw identities ``ids``."""
        ...


def read_file(path: Path) -> bytes:
    """The bytes of an input file, or InputError naming what is wrong with it."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise InputError(f"{path}: no such file", code="INPUT_MISSING") from None
    except OSError as exc:
        raise InputError(
            f"{path}: cannot be read ({exc.strerror})", code="INPUT_UNREADABLE"
        ) from None
    if not path.is_file():
        raise InputError(f"{path}: not a regular file", code="INPUT_UNREADABLE")
    if size > MAX_FILE_BYTES:
        raise InputError(
            f"{path}: {size:,} bytes is larger than any day's batch", code="INPUT_TOO_LARGE"
        )
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InputError(
            f"{path}: cannot be read ({exc.strerror})", code="INPUT_UNREADABLE"
        ) from None


def most_common(values: np.ndarray | int) -> int | None:
    """The most frequent value (the smallest on ties), or None for no values."""
    values = np.atleast_1d(np.asarray(values))
    if len(values) == 0:
        return None
    uniq, counts = np.unique(values, return_counts=True)
    return int(uniq[np.argmax(counts)])


def result(
    taps: pa.Table | None, errors: list[RowError], rows: int, source_rows: np.ndarray
) -> ParseResult:
    """Assemble a ``ParseResult``, inferring the batch's operator and service day from its taps."""
    if taps is None:
        taps = empty_taps()
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
    )
