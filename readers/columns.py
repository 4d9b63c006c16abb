"""Vectorised building blocks of the adapters: lines, digit and hex fields, times, row checks.

An adapter never loops over records in Python to validate them: it turns the file into
columns (numpy arrays, Arrow arrays), runs each check as one array expression, and records
for each row the *first* check it failed (``RowChecks``), so that a row failing several
checks is always reported with the same code, in the order its format page documents.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from clearing.errors import RowError
from clearing.taps import FULL_TAP_SCHEMA, TAP_SCHEMA
from tariffs.error_codes import ErrorCode

INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1
UINT16_MAX = 2**16 - 1
UINT32_MAX = 2**32 - 1
UINT8_MAX = 2**8 - 1
CST_OFFSET_MS = 8 * 3600 * 1000  # SPEC §1: the circle is on UTC+8 all year
ECHO_LIMIT = 12  # an invalid raw value longer than this is redacted: it could be a card number
REDACTED = "<redacted>"


# ---------------------------------------------------------------------------------------------
# Lines


@dataclass(frozen=True, slots=True)
class Lines:
    """A text file cut into lines without copying: the bytes and each row's [start, end)."""

    data: np.ndarray  # uint8 view of the whole file
    starts: np.ndarray  # int64 offset of each row's first byte
    ends: (
        np.ndarray
    )  # int64 offset one past each row's last byte (line break and trailing CR dropped)
    rows: np.ndarray  # int64 0-based line number of each row (= line number - 1)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def lengths(self) -> np.ndarray:
        out: np.ndarray = self.ends - self.starts
        return out

    def raw(self, i: int) -> bytes:
        """The bytes of row ``i`` (an index into ``rows``), for the few rows read one by one."""
        return self.data[self.starts[i] : self.ends[i]].tobytes()


def split_lines(data: bytes) -> Lines:
    """Cut ``data`` at LF; a CR before the LF is dropped; empty lines are skipped (not rows)."""
    buf = np.frombuffer(data, dtype=np.uint8)
    breaks = np.flatnonzero(buf == 0x0A)
    starts = np.concatenate(([0], breaks + 1)).astype(np.int64)
    ends = np.concatenate((breaks, [len(buf)])).astype(np.int64)
    has_cr = (ends > starts) & (buf[np.maximum(ends - 1, 0)] == 0x0D) if len(buf) else ends > starts
    ends = ends - has_cr
    keep = ends > starts
    rows = np.flatnonzero(keep).astype(np.int64)
    return Lines(buf, starts[keep], ends[keep], rows)


def fixed_block(lines: Lines, width: int, mask: np.ndarray) -> np.ndarray:
    """The rows selected by ``mask`` (all exactly ``width`` bytes) as an (n, width) uint8 array.

    When every row is selected and the rows sit at a constant stride (the usual, well-formed
    file) this is a zero-copy strided view of the file's bytes; otherwise the rows are
    gathered in chunks so that memory stays bounded.
    """
    idx = np.flatnonzero(mask)
    n = len(idx)
    if n == 0:
        return np.zeros((0, width), dtype=np.uint8)
    starts = lines.starts[idx]
    if n == len(lines) and n > 1:
        stride = int(starts[1] - starts[0])
        if stride >= width and np.all(np.diff(starts) == stride):
            first = int(starts[0])
            return np.lib.stride_tricks.as_strided(
                lines.data[first:], shape=(n, width), strides=(stride, 1), writeable=False
            )
    out = np.empty((n, width), dtype=np.uint8)
    cols = np.arange(width, dtype=np.int64)
    step = max(1, (1 << 24) // max(width, 1))  # ~16 M index cells per chunk
    for lo in range(0, n, step):
        hi = min(n, lo + step)
        out[lo:hi] = lines.data[starts[lo:hi, None] + cols]
    return out


# ---------------------------------------------------------------------------------------------
# Fixed-width fields


_U = np.uint64
_HI_NIBBLES = _U(0xF0F0F0F0F0F0F0F0)
_SIXES = _U(0x0606060606060606)
_ZEROS = _U(0x3030303030303030)


def _digit_words(block: np.ndarray) -> tuple[np.ndarray, int]:
    """An (n, w) ASCII block left-padded with '0' to whole 8-byte words, as (n, k) uint64."""
    n, w = block.shape
    k = max(1, (w + 7) // 8)
    buf = np.full((n, 8 * k), 48, dtype=np.uint8)
    buf[:, 8 * k - w :] = block
    return buf.view("<u8"), k


def _word_ok(t: np.ndarray) -> np.ndarray:
    """Whether each byte of ``t`` (digits XOR '0') is 0..9: high nibble 0 and no carry past 9."""
    ok: np.ndarray = ((t & _HI_NIBBLES) == 0) & (((t + _SIXES) & _HI_NIBBLES) == 0)
    return ok


def digits(block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Decimal value of each row of an (n, w) ASCII block (w <= 18) and whether all were digits.

    SWAR: eight digits at a time in one uint64 (little-endian, so the first digit is the lowest
    byte), combined pairwise into 2-, 4- and 8-digit numbers with three multiply-shift-masks;
    this reads each field once instead of once per digit.
    """
    n, w = block.shape
    if w > 18:
        raise ValueError("digits() parses at most 18 digits into int64")
    words, k = _digit_words(block)
    value = np.zeros(n, dtype=np.int64)
    ok = np.ones(n, dtype=bool)
    with np.errstate(
        over="ignore"
    ):  # the multiplications wrap on purpose: the masks keep the lanes
        for j in range(k):
            t = words[:, j] ^ _ZEROS
            ok &= _word_ok(t)
            t = (t * _U(10) + (t >> _U(8))) & _U(0x00FF00FF00FF00FF)
            t = (t * _U(100) + (t >> _U(16))) & _U(0x0000FFFF0000FFFF)
            t = (t * _U(10000) + (t >> _U(32))) & _U(0xFFFFFFFF)
            value = value * 100_000_000 + t.astype(np.int64)
    return np.where(ok, value, 0), ok


def all_digits(block: np.ndarray) -> np.ndarray:
    """Whether every byte of each row is an ASCII digit (any width)."""
    words, k = _digit_words(block)
    ok = np.ones(block.shape[0], dtype=bool)
    with np.errstate(over="ignore"):
        for j in range(k):
            ok &= _word_ok(words[:, j] ^ _ZEROS)
    return ok


_HEX = np.full(256, -1, dtype=np.int16)
for _i, _c in enumerate(b"0123456789ABCDEF"):
    _HEX[_c] = _i
for _i, _c in enumerate(b"abcdef", start=10):
    _HEX[_c] = _i


def hex_bytes(block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bytes of each row of an (n, 2k) hex block as (n, k) uint8, and whether all were hex."""
    nib = _HEX[block]
    ok = np.all(nib >= 0, axis=1)
    nib = np.clip(nib, 0, 15).astype(np.uint8)
    return (nib[:, 0::2] << 4) | nib[:, 1::2], ok


def put_digits(out: np.ndarray, offset: int, width: int, values: np.ndarray) -> None:
    """Write ``values`` (0 <= v < 10**width) as zero-padded ASCII digits at ``offset``."""
    v = np.asarray(values, dtype=np.int64).copy()
    for j in range(width - 1, -1, -1):
        out[:, offset + j] = 48 + (v % 10)
        v //= 10


# ---------------------------------------------------------------------------------------------
# Time


def days_from_civil(y: np.ndarray, m: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Days since 1970-01-01 of proleptic Gregorian dates (H. Hinnant's days_from_civil)."""
    y = y - (m <= 2)
    era = np.floor_divide(y, 400)
    yoe = y - era * 400
    mp = (m + 9) % 12  # March = 0, so the leap day is the last day of the year
    doy = (153 * mp + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    days: np.ndarray = era * 146097 + doe - 719468
    return days


_MONTH_DAYS = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], dtype=np.int64)


def local_time_ms(
    year: np.ndarray,
    month: np.ndarray,
    day: np.ndarray,
    hour: np.ndarray,
    minute: np.ndarray,
    second: np.ndarray,
    milli: np.ndarray,
    offset_ms: np.ndarray | int = CST_OFFSET_MS,
) -> tuple[np.ndarray, np.ndarray]:
    """UTC ms of wall-clock times ``offset_ms`` east of UTC, and whether each is a real instant."""
    leap = ((year % 4 == 0) & (year % 100 != 0)) | (year % 400 == 0)
    month_ok = (month >= 1) & (month <= 12)
    dim = _MONTH_DAYS[np.clip(month, 0, 12)] + ((month == 2) & leap)
    ok = (
        (year >= 1)
        & month_ok
        & (day >= 1)
        & (day <= dim)
        & (hour <= 23)
        & (minute <= 59)
        & (second <= 59)
        & (milli <= 999)
    )
    days = days_from_civil(year, np.where(month_ok, month, 1), day)
    ms = ((days * 24 + hour) * 60 + minute) * 60_000 + second * 1000 + milli - offset_ms
    return ms, ok


def compact_time_ms(block: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Parse ``YYYYMMDDhhmmssfff`` (CST) rows: (UTC ms, all digits, a real instant)."""
    date, ok1 = digits(block[:, 0:8])  # YYYYMMDD
    clock, ok2 = digits(block[:, 8:16])  # hhmmssff
    last, ok3 = digits(block[:, 16:17])  # the millisecond's last digit
    fmt_ok = ok1 & ok2 & ok3
    ms, real = local_time_ms(
        date // 10_000,
        date // 100 % 100,
        date % 100,
        clock // 1_000_000,
        clock // 10_000 % 100,
        clock // 100 % 100,
        clock % 100 * 10 + last,
    )
    return ms, fmt_ok, real & fmt_ok


def put_compact_time(out: np.ndarray, offset: int, ts_ms: np.ndarray) -> None:
    """Write UTC ms as China Standard Time ``YYYYMMDDhhmmssfff`` at ``offset``."""
    local = np.asarray(ts_ms, dtype=np.int64) + CST_OFFSET_MS
    days, ms_of_day = np.divmod(local, 86_400_000)
    y, m, d = civil_from_days(days)
    for off, width, values in (
        (0, 4, y),
        (4, 2, m),
        (6, 2, d),
        (8, 2, ms_of_day // 3_600_000),
        (10, 2, ms_of_day // 60_000 % 60),
        (12, 2, ms_of_day // 1000 % 60),
        (14, 3, ms_of_day % 1000),
    ):
        put_digits(out, offset + off, width, values)


def civil_from_days(z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(year, month, day) of days since 1970-01-01 (H. Hinnant's civil_from_days)."""
    z = np.asarray(z, dtype=np.int64) + 719468
    era = np.floor_divide(z, 146097)
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = np.where(mp < 10, mp + 3, mp - 9)
    return yoe + era * 400 + (m <= 2), m, d


# ---------------------------------------------------------------------------------------------
# Arrow string columns


def matches(arr: pa.Array, pattern: str) -> np.ndarray:
    """Whether each string fully matches ``pattern`` (RE2, anchored); null is False."""
    hit = pc.match_substring_regex(arr, f"^(?:{pattern})$")
    return np.asarray(hit.fill_null(False).to_numpy(zero_copy_only=False), dtype=bool)


def fixed_bytes(arr: pa.Array, width: int, ok: np.ndarray) -> np.ndarray:
    """An (n, width) uint8 block of the strings where ``ok`` (each ``width`` ASCII bytes)."""
    filler = "0" * width
    clean = pc.if_else(pa.array(ok, type=pa.bool_()), arr, filler).fill_null(filler)
    fsb = clean.cast(pa.binary()).cast(pa.binary(width))
    if isinstance(fsb, pa.ChunkedArray):
        fsb = fsb.combine_chunks()
    data = np.frombuffer(fsb.buffers()[1], dtype=np.uint8)
    start = fsb.offset * width
    return data[start : start + len(fsb) * width].reshape(len(fsb), width)


def code_of(arr: pa.Array, names: Sequence[str]) -> np.ndarray:
    """Index of each string in ``names``, -1 when absent or null (for closed vocabularies)."""
    idx = pc.index_in(arr, value_set=pa.array(list(names), type=pa.string()))
    return np.asarray(idx.fill_null(-1).to_numpy(zero_copy_only=False), dtype=np.int64)


# ---------------------------------------------------------------------------------------------
# Row checks: first failure wins


@dataclass(frozen=True, slots=True)
class Reason:
    """One way a row can fail: its code, the field concerned and the words an operator reads."""

    code: ErrorCode  # a reader row code of the table
    field: str
    message: str


@dataclass
class RowChecks:
    """The first failed check of each of ``n`` rows (0 = none so far)."""

    n: int
    reasons: list[Reason] = field(default_factory=list)
    first: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.first = np.zeros(self.n, dtype=np.int32)

    @property
    def ok(self) -> np.ndarray:
        ok: np.ndarray = self.first == 0
        return ok

    def flag(self, bad: np.ndarray, code: ErrorCode, field_name: str, message: str) -> None:
        """Mark ``bad`` rows that have not failed an earlier check with this reason."""
        hit = np.asarray(bad, dtype=bool) & (self.first == 0)
        if hit.any():
            self.reasons.append(Reason(code, field_name, message))
            self.first[hit] = len(self.reasons)

    def flag_rows(self, rows: Sequence[int], code: ErrorCode, field_name: str,
                  message: str) -> None:
        mask = np.zeros(self.n, dtype=bool)
        mask[np.asarray(rows, dtype=np.int64)] = True
        self.flag(mask, code, field_name, message)

    def errors(self, lines: Lines, record: Callable[[int], dict[str, object]]) -> list[RowError]:
        """One ``RowError`` per failed row of ``lines``, in file order.

        ``record(i)`` is its tokenised record; ``raw`` is the line exactly as it came in (its
        line break dropped), even when it decoded to nothing, so that the row can be corrected
        and resubmitted (SPEC §4). Only the failed rows are copied out of the file.
        """
        out = []
        for i in np.flatnonzero(self.first):
            r = self.reasons[self.first[i] - 1]
            out.append(
                RowError(
                    r.code,
                    int(lines.rows[i]),
                    r.field,
                    r.message,
                    record(int(i)),
                    raw=lines.raw(int(i)),
                )
            )
        return out


def echo(raw: object, valid: bool) -> object:
    """A raw field value fit for an error record: short or valid values as they came, else redacted.

    An invalid value longer than ``ECHO_LIMIT`` characters could be a card or social-security
    number typed into the wrong field, so it never reaches the quarantine.
    """
    if raw is None or valid:
        return raw
    return raw if len(str(raw)) <= ECHO_LIMIT else REDACTED


def in_range(values: np.ndarray, lo: int, hi: int) -> np.ndarray:
    return (values >= lo) & (values <= hi)


# ---------------------------------------------------------------------------------------------
# The canonical table


def taps_from_columns(cols: dict[str, np.ndarray], keep: np.ndarray) -> pa.Table:
    """The ``TAP_SCHEMA`` table of rows ``keep``; every value was range-checked to its width.

    A format whose records carry the purse balance gives ``balance_fen`` too: the table then
    has ``FULL_TAP_SCHEMA`` (SPEC v1.2 §3), which ``readers.base.result`` splits off.
    """
    schema = FULL_TAP_SCHEMA if "balance_fen" in cols else TAP_SCHEMA
    arrays = []
    for f in schema:
        values = np.asarray(cols[f.name])[keep]
        arrays.append(pa.array(values.astype(f.type.to_pandas_dtype(), copy=False), type=f.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def iso_times(ts_ms: np.ndarray) -> list[str]:
    """UTC ms as China Standard Time ``YYYY-MM-DDThh:mm:ss.fff+08:00`` strings (for writers)."""
    n = len(ts_ms)
    compact = np.empty((n, 17), dtype=np.uint8)
    put_compact_time(compact, 0, ts_ms)
    out = np.empty((n, 29), dtype=np.uint8)
    out[:] = np.frombuffer(b"0000-00-00T00:00:00.000+08:00", dtype=np.uint8)
    for src, dst in ((0, 0), (4, 5), (6, 8), (8, 11), (10, 14), (12, 17)):
        width = 4 if src == 0 else 2
        out[:, dst : dst + width] = compact[:, src : src + width]
    out[:, 20:23] = compact[:, 14:17]
    raw = out.tobytes()
    return [raw[i : i + 29].decode("ascii") for i in range(0, n * 29, 29)]
