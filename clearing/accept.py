"""Acceptance checks of canonical taps (SPEC §4), vectorised over a whole batch.

The registry is compiled once into lookup arrays, and one kernel (``_first_failures``) reads
each row once, in the SPEC's order of checks, stopping at its first failure: ten million rows
cost one pass and no Python per row. Only the rejected rows become Python values
(``RowError``), because they are few and an operator reads each of them.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache, partial
from itertools import repeat
from typing import Any

import numpy as np
import pyarrow as pa
from numba import njit

from clearing.errors import RowError
from clearing.service_day import day_bounds_ms
from clearing.taps import ACCOUNT_BASED, TAP_COLUMNS, TapType
from tariffs.compile import EPOCH, NO_INDEX, PriceKind, compile_tariffs
from tariffs.error_codes import ErrorCode
from tariffs.load import TariffSet, load_tariff_set
from tariffs.registry import FLAT, Registry
from tariffs.rules import version_in_force
from tariffs.vocab import Media, Product


@dataclass(frozen=True, slots=True)
class Check:
    """One acceptance check: its stable code and the field it concerns."""

    code: ErrorCode
    field: str


# SPEC §4: a row failing several checks is reported with the first, in exactly this order.
# MISSING_VALUE comes first because no other check can look at a null.
CHECKS: tuple[Check, ...] = (
    Check(ErrorCode.MISSING_VALUE, ""),
    Check(ErrorCode.UNKNOWN_OPERATOR, "operator"),
    Check(ErrorCode.UNKNOWN_ISSUER, "issuer"),
    Check(ErrorCode.UNKNOWN_CITY, "city"),
    Check(ErrorCode.UNKNOWN_LINE, "line"),
    Check(ErrorCode.UNKNOWN_STOP, "stop"),
    Check(ErrorCode.BAD_TAP_TYPE, "tap_type"),
    Check(ErrorCode.BAD_PRODUCT, "product"),
    Check(ErrorCode.BAD_MEDIA, "media"),
    Check(ErrorCode.OUTSIDE_SERVICE_DAY, "ts_ms"),
    Check(ErrorCode.STOP_NOT_ON_LINE, "stop"),
    Check(ErrorCode.STOP_ZERO_ON_NETWORK, "stop"),
    Check(ErrorCode.BAD_DEBIT, "debited_fen"),
    Check(ErrorCode.CITY_MISMATCH, "city"),
    Check(ErrorCode.TAP_TYPE_LINE_MISMATCH, "tap_type"),
    # SPEC §4 "Acceptance guarantees pricing" and "Debit plausibility": after all the checks
    # above, against the batch's declared service day. NO_TARIFF_VERSION concerns ts_ms, not
    # city: the tariff area is the line's operator's city (SPEC §5), which the tap's city need
    # not be (Line 11 into Ezhou), and what has no version is the day the tap lies in.
    Check(ErrorCode.NO_TARIFF_VERSION, "ts_ms"),
    Check(ErrorCode.UNPRICEABLE_LINE, "line"),
    Check(ErrorCode.DEBIT_TOO_HIGH, "debited_fen"),
)
CODES: tuple[ErrorCode, ...] = tuple(c.code for c in CHECKS)


DENSE_LIMIT = 1 << 24  # a direct-address table up to 16M slots (64 MB) beats binary search


class _Index:
    """Position of each value among sorted keys, for a whole column at once.

    Registry ids are small, so a direct-address table answers with one gather per row; a
    sorted array with ``np.searchsorted`` is the fallback for ids too large for a table.
    """

    def __init__(self, keys: np.ndarray) -> None:
        self.keys = np.asarray(keys, dtype=np.uint64)
        self.table: np.ndarray | None = None
        if len(self.keys) and int(self.keys[-1]) < DENSE_LIMIT:
            # the last slot is never a key: every out-of-range value is clipped onto it
            self.table = np.full(int(self.keys[-1]) + 2, -1, dtype=np.int32)
            self.table[self.keys.astype(np.int64)] = np.arange(len(self.keys), dtype=np.int32)

    def resolve(self, values: np.ndarray | Callable[[], np.ndarray]
                ) -> tuple[np.ndarray, np.ndarray]:
        """(table, positions) for ``_first_failures``: the direct-address table when there is
        one (the kernel looks each value up), else each value's position found here, -1 when
        absent (``values``, if a function, is only called then)."""
        if self.table is not None:
            return self.table, np.zeros(0, dtype=np.int32)
        idx, known = self.find(values() if callable(values) else values)
        return np.zeros(0, dtype=np.int32), np.where(known, idx, -1).astype(np.int32)

    def find(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(index into the keys, or 0 when absent; whether present)."""
        if len(self.keys) == 0:
            return np.zeros(len(values), dtype=np.int64), np.zeros(len(values), dtype=bool)
        if self.table is not None:
            pos = self.table[np.minimum(values, len(self.table) - 1)]
            return np.maximum(pos, 0), pos >= 0
        v = values.astype(np.uint64)
        idx = np.minimum(np.searchsorted(self.keys, v), len(self.keys) - 1)
        return idx, self.keys[idx] == v


@dataclass(frozen=True)
class _Lookup:
    """The registry compiled into arrays the checks probe a whole column at a time."""

    operator_known: np.ndarray  # bool[65536], by operator code (uint16)
    operator_city: np.ndarray  # uint32[65536], 0 for unknown operators
    operator_index: np.ndarray  # int64[65536]: dense operator number, n_operators if unknown
    issuer_known: np.ndarray  # bool[65536], by issuer code (uint16)
    cities: _Index  # city codes
    line_stride: int  # lines are keyed operator_index * line_stride + min(line, stride - 1)
    lines: _Index  # of those keys, in the order of line_network
    line_network: np.ndarray  # int64 network of each line (FLAT = 0)
    stops: _Index  # stop ids, in the order of stop_city
    stop_city: np.ndarray  # uint32 city of each stop
    on_line: np.ndarray  # bool[line, stop index]: the stop is on the line


_LOOKUPS: dict[int, tuple[Registry, _Lookup]] = {}


def _lookup(registry: Registry) -> _Lookup:
    """Compile (once per registry object) the arrays the checks probe."""
    hit = _LOOKUPS.get(id(registry))
    if hit is not None and hit[0] is registry:
        return hit[1]
    ops = sorted(c for c in registry.operators if 0 <= c < 1 << 16)
    operator_known = np.zeros(1 << 16, dtype=bool)
    operator_city = np.zeros(1 << 16, dtype=np.uint32)
    operator_index = np.full(1 << 16, len(ops), dtype=np.int64)
    for i, code in enumerate(ops):
        operator_known[code] = True
        operator_city[code] = registry.operators[code].city
        operator_index[code] = i
    issuer_known = np.zeros(1 << 16, dtype=bool)
    for code in registry.issuers:
        if 0 <= code < 1 << 16:
            issuer_known[code] = True
    # line ids beyond the largest known one all clip onto stride - 1, which is no line
    stride = max((ln.line for ln in registry.lines.values()), default=0) + 2
    keyed = sorted((int(operator_index[ln.operator]) * stride + ln.line, ln)
                   for ln in registry.lines.values()
                   if 0 <= ln.operator < 1 << 16 and operator_known[ln.operator])
    stop_ids = np.array(sorted(registry.stops), dtype=np.uint64)
    stops = _Index(stop_ids)
    cities = _Index(np.array(sorted(registry.cities), dtype=np.uint64))
    lines = _Index(np.array([k for k, _ in keyed], dtype=np.uint64))
    on_line = np.zeros((max(len(keyed), 1), max(len(stop_ids), 1)), dtype=bool)
    for i, (_, ln) in enumerate(keyed):
        if ln.stops:
            idx, known = stops.find(np.array(ln.stops, dtype=np.uint64))
            on_line[i, idx[known]] = True
    lookup = _Lookup(
        operator_known=operator_known,
        operator_city=operator_city,
        operator_index=operator_index,
        issuer_known=issuer_known,
        cities=cities,
        line_stride=stride,
        lines=lines,
        line_network=np.array([ln.network for _, ln in keyed], dtype=np.int64),
        stops=stops,
        stop_city=np.array([registry.stops[int(s)].city for s in stop_ids], dtype=np.uint32),
        on_line=on_line,
    )
    if len(_LOOKUPS) > 16:  # registries are few and long-lived; never grow without bound
        _LOOKUPS.clear()
    _LOOKUPS[id(registry)] = (registry, lookup)
    return lookup


# --------------------------------------------------------------------------- pricing guarantees

PRICEABLE = 0  # the tariff set in force prices the tap
NO_TARIFF_VERSION = 1  # no version of the line's tariff area is in force on the service day
UNPRICEABLE_LINE = 2  # the version in force prices no fare (or no ORDINARY price) for the line
PRICING_CODES: dict[int, ErrorCode] = {NO_TARIFF_VERSION: ErrorCode.NO_TARIFF_VERSION,
                                       UNPRICEABLE_LINE: ErrorCode.UNPRICEABLE_LINE}


@dataclass(frozen=True, eq=False)
class DayRules:
    """What acceptance needs of one tariff set on one service day, from its compiled tables.

    Read from ``tariffs.compile`` (the very tables the kernels price with), so "acceptance
    guarantees pricing" (SPEC §4) cannot drift from what pricing does; built once per (tariff
    set, day) by ``day_rules``. Areas, operators and lines are the compiled dense indices.
    """

    day: dt.date
    operator_index: np.ndarray  # int32[max operator + 1]: raw operator -> dense o, or -1
    line_index: np.ndarray  # int32[O, max line + 1]: (o, raw line) -> dense l, or -1
    operator_area: np.ndarray  # int32[O]: tariff area of operator o (SPEC §5: its city)
    area_codes: np.ndarray  # int64[A]: GB/T 2260 code of area a
    area_in_force: np.ndarray  # bool[A]: some version of area a is in force on the day
    line_priceable: np.ndarray  # bool[L]: the version in force prices a leg on line l
    area_max_leg: np.ndarray  # int64[A]: the most one leg can cost in area a that day; -1: none

    def status(self, operator: np.ndarray, line: np.ndarray) -> np.ndarray:
        """int8 per tap: PRICEABLE, NO_TARIFF_VERSION or UNPRICEABLE_LINE (first that fails).

        An operator the tariff set's registry lacks is a line no tariff covers. One kernel
        pass (``_status_kernel``) over the columns, as int64 like ``dense`` reads them: a
        whole day's taps (``clearing.partition``) make no temporaries of their length.
        """
        return _status_kernel(np.asarray(operator, dtype=np.int64),
                              np.asarray(line, dtype=np.int64), *self.tables())

    def tables(self) -> tuple[np.ndarray, ...]:
        """The arrays ``_status_kernel`` and ``_first_failures`` read, in their order."""
        return (self.operator_index, self.line_index, self.operator_area,
                self.area_in_force, self.line_priceable, self.area_max_leg)

    def max_leg(self, operator: np.ndarray) -> np.ndarray:
        """int64 per tap: the most one leg can cost in its operator's area; -1 when unknown."""
        o = _gather(self.operator_index, operator)
        area = np.where(o >= 0, self.operator_area[np.maximum(o, 0)], NO_INDEX)
        return np.where(area >= 0, self.area_max_leg[np.maximum(area, 0)], -1)


def _gather(index: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``index[values]`` as int64, -1 for values outside the index."""
    v = np.asarray(values, dtype=np.int64)
    inside = (v >= 0) & (v < len(index))
    return np.where(inside, index[np.where(inside, v, 0)], NO_INDEX).astype(np.int64)


# --------------------------------------------------------------------------- one pass per batch
# The checks as per-row kernels: ``check_taps`` once ran each check as numpy expressions over
# the whole batch (a dozen temporaries of ten million rows each, most of the time at 10M);
# these read each row once and stop at its first failing check. The numpy form stays in
# tests/test_ingest_speed_equivalence.py, as the twin the kernels are compared with.


@njit(cache=True, nogil=True)
def _status_kernel(operator: np.ndarray, line: np.ndarray, operator_index: np.ndarray,
                   line_index: np.ndarray, operator_area: np.ndarray, area_in_force: np.ndarray,
                   line_priceable: np.ndarray, area_max_leg: np.ndarray) -> np.ndarray:
    """``DayRules.status`` of int64 columns, a row at a time (``area_max_leg`` unread: the
    arguments are ``DayRules.tables``).

    The same steps as the pricing guarantee in ``_first_failures``, written out in both:
    numba does not inline a call with array arguments, and the call's reference counting
    costs more than the row's checks.
    """
    out = np.empty(len(operator), dtype=np.int8)
    width = line_index.shape[1]
    for i in range(len(operator)):
        op, ln = operator[i], line[i]
        o = operator_index[op] if 0 <= op < len(operator_index) else NO_INDEX
        if o < 0:  # no area and no line: a line no tariff covers
            out[i] = UNPRICEABLE_LINE
            continue
        area = operator_area[o]
        if area >= 0 and not area_in_force[area]:
            out[i] = NO_TARIFF_VERSION
            continue
        dense_line = line_index[o, ln] if 0 <= ln < width else NO_INDEX
        out[i] = (UNPRICEABLE_LINE if dense_line < 0 or not line_priceable[dense_line]
                  else PRICEABLE)
    return out


# The order of the checks in ``_first_failures``; the import fails if it is not CHECKS'.
_KERNEL_ORDER = (
    ErrorCode.MISSING_VALUE, ErrorCode.UNKNOWN_OPERATOR, ErrorCode.UNKNOWN_ISSUER,
    ErrorCode.UNKNOWN_CITY, ErrorCode.UNKNOWN_LINE, ErrorCode.UNKNOWN_STOP,
    ErrorCode.BAD_TAP_TYPE, ErrorCode.BAD_PRODUCT, ErrorCode.BAD_MEDIA,
    ErrorCode.OUTSIDE_SERVICE_DAY, ErrorCode.STOP_NOT_ON_LINE, ErrorCode.STOP_ZERO_ON_NETWORK,
    ErrorCode.BAD_DEBIT, ErrorCode.CITY_MISMATCH, ErrorCode.TAP_TYPE_LINE_MISMATCH,
    ErrorCode.NO_TARIFF_VERSION, ErrorCode.UNPRICEABLE_LINE, ErrorCode.DEBIT_TOO_HIGH,
)
if _KERNEL_ORDER != CODES:
    raise RuntimeError("clearing.accept: _first_failures checks in another order than CHECKS")
_FLAT_TAP = int(TapType.FLAT)


@njit(cache=True, nogil=True)
def _first_failures(
    missing: np.ndarray, op: np.ndarray, issuer: np.ndarray, city: np.ndarray,
    line: np.ndarray, stop: np.ndarray, tap_type: np.ndarray, product: np.ndarray,
    media: np.ndarray, ts: np.ndarray, debit: np.ndarray,
    operator_known: np.ndarray, issuer_known: np.ndarray, operator_index: np.ndarray,
    operator_city: np.ndarray, stride: int, line_network: np.ndarray, stop_city: np.ndarray,
    on_line: np.ndarray, valid_tap: np.ndarray, valid_product: np.ndarray,
    valid_media: np.ndarray, start: int, end: int,
    city_table: np.ndarray, city_positions: np.ndarray, line_table: np.ndarray,
    line_positions: np.ndarray, stop_table: np.ndarray, stop_positions: np.ndarray,
    r_operator_index: np.ndarray, r_line_index: np.ndarray, r_operator_area: np.ndarray,
    r_area_in_force: np.ndarray, r_line_priceable: np.ndarray, r_area_max_leg: np.ndarray,
) -> np.ndarray:
    """int8 per row: 0 when accepted, else 1 + the index in CHECKS of its first failure.

    Null values were filled with 0 by the caller: a row with one fails MISSING_VALUE first,
    and every later check reads only rows that passed the earlier ones (a known operator,
    line and stop), as the whole-column expressions' first failure did.
    """
    n = len(op)
    first = np.zeros(n, dtype=np.int8)
    for i in range(n):
        code = np.int64(op[i])
        if missing[i]:
            first[i] = 1
            continue
        if not operator_known[code]:
            first[i] = 2
            continue
        if not issuer_known[issuer[i]]:
            first[i] = 3
            continue
        c = int(city[i])
        # an _Index: its direct-address table, else the positions numpy found (_Index.resolve)
        pos = city_table[min(c, len(city_table) - 1)] if len(city_table) else city_positions[i]
        if pos < 0:
            first[i] = 4
            continue
        raw_line = int(line[i])
        key = operator_index[code] * stride + min(raw_line, stride - 1)
        line_idx = np.int64(line_table[min(key, len(line_table) - 1)] if len(line_table)
                            else line_positions[i])
        if line_idx < 0:
            first[i] = 5
            continue
        s = int(stop[i])
        stop_idx = np.int64(stop_table[min(s, len(stop_table) - 1)] if len(stop_table)
                            else stop_positions[i])
        if s != 0 and stop_idx < 0:
            first[i] = 6
            continue
        t = tap_type[i]
        if not valid_tap[t]:
            first[i] = 7
            continue
        if not valid_product[product[i]]:
            first[i] = 8
            continue
        if not valid_media[media[i]]:
            first[i] = 9
            continue
        if ts[i] < start or ts[i] >= end:
            first[i] = 10
            continue
        if s != 0 and not on_line[line_idx, stop_idx]:  # a known line and a known stop
            first[i] = 11
            continue
        flat_line = line_network[line_idx] == FLAT
        if s == 0 and not flat_line:
            first[i] = 12
            continue
        d = np.int64(debit[i])
        if d < ACCOUNT_BASED:
            first[i] = 13
            continue
        # SPEC §4: the tap's city is its stop's city; for stop 0 the city of the line's operator
        expected_city = np.int64(operator_city[code] if s == 0 else stop_city[stop_idx])
        if c != expected_city:
            first[i] = 14
            continue
        if (t != _FLAT_TAP) if flat_line else (t == _FLAT_TAP):
            first[i] = 15
            continue
        # DayRules.status, as _status_kernel: the operator has an area, or no tariff covers it
        o = r_operator_index[code] if code < len(r_operator_index) else NO_INDEX
        area = r_operator_area[o] if o >= 0 else NO_INDEX
        if area >= 0 and not r_area_in_force[area]:
            first[i] = 16
            continue
        dense_line = (r_line_index[o, raw_line] if o >= 0 and raw_line < r_line_index.shape[1]
                      else NO_INDEX)
        if dense_line < 0 or not r_line_priceable[dense_line]:
            first[i] = 17
            continue
        # SPEC §4: a stored-value tap (debit >= 0) may debit at most one leg's worst case
        # (DayRules.max_leg: -1 when the operator has no area)
        if d >= 0 and d > (r_area_max_leg[area] if area >= 0 else -1):
            first[i] = 18
    return first


def _valid(members: type[enum.IntEnum]) -> np.ndarray:
    """bool[256]: which uint8 values are members (the tap's tap_type, product, media)."""
    out = np.zeros(256, dtype=bool)
    out[[int(m) for m in members if 0 <= int(m) < 256]] = True
    return out


_VALID_TAP, _VALID_PRODUCT, _VALID_MEDIA = _valid(TapType), _valid(Product), _valid(Media)


@lru_cache(maxsize=64)  # a tariff set is hashed by identity; batches of a day share one entry
def day_rules(tariffs: TariffSet, day: dt.date) -> DayRules:
    """SPEC §4 pricing guarantees of ``tariffs`` on service day ``day``, compiled once.

    A line is priceable when the version of its area in force that day has a flat fare for it
    (a flat line) or fares for its network (an entry-exit line), and an ORDINARY price for its
    mode (SPEC §6.3: the fallback of every product). The most one leg can cost in an area is
    the largest of the version's flat fares and its networks' ``max_fare`` (SPEC §4 debit
    plausibility): ``max_fare`` is at least every base fare of its network (checked at load)
    and discounts only lower a fare, so no correct debit exceeds it.
    """
    ct = compile_tariffs(tariffs)
    n_areas = len(ct.area_codes)
    number = (day - EPOCH).days
    # the kernels' own version lookup, once per area (nine of them) and day
    version = np.array([version_in_force(ct.version_valid_from, int(ct.area_version_start[a]),
                                         int(ct.area_version_stop[a]), number)
                        for a in range(n_areas)], dtype=np.int64)
    max_leg = np.full(n_areas, -1, dtype=np.int64)
    for a in np.flatnonzero(version >= 0):
        fares = ct.line_fare[version[a]]
        tables = ct.fare_table[version[a]]
        max_leg[a] = max(int(fares[fares >= 0].max(initial=0)),
                         int(ct.fare_max[tables[tables >= 0]].max(initial=0)))
    line_v = version[ct.line_area]
    priceable = np.zeros(len(line_v), dtype=bool)
    if len(ct.version_area):  # a set with no version at all prices nothing
        v = np.maximum(line_v, 0)
        net = ct.line_network
        fare = np.where(net < 0, ct.line_fare[v, np.arange(len(net))] >= 0,
                        ct.fare_table[v, np.maximum(net, 0)] >= 0)
        priced_mode = ct.price_kind[v, ct.line_mode, int(Product.ORDINARY)] != PriceKind.NONE
        priceable = (line_v >= 0) & fare & priced_mode
    return DayRules(
        day=day,
        operator_index=ct.operator_index,
        line_index=ct.line_index,
        operator_area=ct.operator_area,
        area_codes=ct.area_codes,
        area_in_force=version >= 0,
        line_priceable=priceable,
        area_max_leg=max_leg,
    )


def _line_keys(lk: _Lookup, cols: dict[str, np.ndarray]) -> np.ndarray:
    """Each row's key among ``lk.lines``: its dense operator and its line, packed."""
    stride = lk.line_stride
    keys: np.ndarray = ((lk.operator_index[cols["operator"]] * stride).astype(np.uint64)
                        + np.minimum(cols["line"], stride - 1).astype(np.uint64))
    return keys


# The kernel's columns at their storage width; the other tap columns are only checked for nulls.
_WIDTHS: dict[str, type] = {
    "operator": np.uint16, "issuer": np.uint16, "product": np.uint8, "media": np.uint8,
    "ts_ms": np.int64, "city": np.uint32, "line": np.uint32, "stop": np.uint32,
    "tap_type": np.uint8, "debited_fen": np.int32,
}


def _column(col: pa.Array, dtype: type) -> np.ndarray:
    """A column of one record batch as a numpy array of its storage width, nulls as 0: no
    copy when it has no nulls and that width (the canonical schema's)."""
    if col.null_count:
        col = col.fill_null(0)
    out: np.ndarray = np.asarray(col.to_numpy(zero_copy_only=False), dtype=dtype)
    return out


def check_taps(
    table: pa.Table, registry: Registry, service_day: dt.date, *,
    tariffs: TariffSet | None = None,
) -> tuple[np.ndarray, list[RowError]]:
    """SPEC §4 acceptance: the mask of accepted rows and one ``RowError`` per rejected row.

    ``table`` has the columns of ``TAP_SCHEMA`` (extra columns are ignored); ``service_day``
    is the batch's declared day. Each row is reported with the first check it fails, in the
    SPEC's order (``CHECKS``); ``RowError.row`` is the 0-based row index in ``table``.
    ``tariffs`` is the tariff set in force (default: ``tariffs.load.load_tariff_set()``,
    cached per process): an accepted tap is one it prices (SPEC §4).
    """
    n = table.num_rows
    missing = [c for c in TAP_COLUMNS if c not in table.column_names]
    if missing:
        raise ValueError(f"check_taps needs the canonical tap columns; missing {missing}")
    lk = _lookup(registry)
    rules = day_rules(tariffs if tariffs is not None else load_tariff_set(), service_day)
    start, end = day_bounds_ms(service_day)
    first = np.zeros(n, dtype=np.int8)
    null_field = np.full(n, -1, dtype=np.int8)  # index in TAP_COLUMNS of the first null
    offset = 0
    # a record batch at a time: its columns are numpy views of arrow's buffers, where a whole
    # column would be concatenated from its chunks (a copy of every column of the batch)
    for batch in table.select(list(TAP_COLUMNS)).to_batches():
        m = batch.num_rows
        null_any = np.zeros(m, dtype=bool)
        here = null_field[offset:offset + m]
        for i, col in enumerate(batch.columns):
            if col.null_count:
                nulls = col.is_null().to_numpy(zero_copy_only=False)
                here[nulls & ~null_any] = i
                null_any |= nulls
        cols = {name: _column(batch.column(name), dtype) for name, dtype in _WIDTHS.items()}
        first[offset:offset + m] = _first_failures(
            null_any, cols["operator"], cols["issuer"], cols["city"], cols["line"],
            cols["stop"], cols["tap_type"], cols["product"], cols["media"], cols["ts_ms"],
            cols["debited_fen"], lk.operator_known, lk.issuer_known, lk.operator_index,
            lk.operator_city, lk.line_stride, lk.line_network, lk.stop_city, lk.on_line,
            _VALID_TAP, _VALID_PRODUCT, _VALID_MEDIA, int(start), int(end),
            *lk.cities.resolve(cols["city"]), *lk.lines.resolve(partial(_line_keys, lk, cols)),
            *lk.stops.resolve(cols["stop"]), *rules.tables())
        offset += m
    accepted = first == 0
    return accepted, _row_errors(table, first, null_field, lk, rules)


def _row_errors(
    table: pa.Table,
    first: np.ndarray,
    null_field: np.ndarray,
    lk: _Lookup,
    rules: DayRules,
) -> list[RowError]:
    """The rejected rows as values, built a column and a check at a time.

    A bad batch rejects hundreds of thousands of rows (a 15M day: 170 000), so the records
    are zipped from whole columns and each check's messages formatted by one comprehension
    over its rows, not dispatched row by row; the text is the same (tests compare it with
    the per-row builder). Messages name the values as the record holds them."""
    bad = np.flatnonzero(first)
    if len(bad) == 0:
        return []
    sub = table.select(list(TAP_COLUMNS)).take(pa.array(bad))
    values = [sub.column(name).to_pylist() for name in TAP_COLUMNS]
    # one dict per row, every step a C iterator (a comprehension's frame per row was most
    # of the time of a bad batch's records)
    records = list(map(dict, map(zip, repeat(TAP_COLUMNS), zip(*values, strict=True))))
    kind = first[bad]
    # the rows grouped by their check (stably, so in row order within each), formatted a
    # check at a time, then put back in row order by one permutation
    order = np.argsort(kind, kind="stable")
    grouped = kind[order]
    cuts = np.flatnonzero(np.diff(grouped)) + 1
    fields: list[str] = []
    messages: list[str] = []
    for at in np.split(order, cuts):
        check = CHECKS[int(kind[at[0]]) - 1]
        if check.field:
            field_of = [check.field] * len(at)
        else:
            field_of = list(map(TAP_COLUMNS.__getitem__, null_field[bad[at]].tolist()))
        at_list = at.tolist()
        columns = _Columns(values, at_list, len(at_list) == len(bad))
        fields += field_of
        messages += _messages(check.code, columns, field_of, lk, rules)
    back = np.empty(len(order), dtype=np.int64)
    back[order] = np.arange(len(order))
    back_list = back.tolist()
    fields = list(map(fields.__getitem__, back_list))
    messages = list(map(messages.__getitem__, back_list))
    codes = list(map(CODES.__getitem__, (kind.astype(np.int64) - 1).tolist()))
    return list(map(RowError, codes, bad.tolist(), fields, messages, records))


class _Columns(dict[str, list[Any]]):
    """The record values of one check's rows, by column, each column taken when first read:
    a message names two or three of the fourteen."""

    def __init__(self, values: list[list[Any]], at: list[int], every_row: bool) -> None:
        super().__init__()
        self._values, self._at, self._every_row = values, at, every_row

    def __missing__(self, name: str) -> list[Any]:
        column = self._values[TAP_COLUMNS.index(name)]
        taken = column if self._every_row else list(map(column.__getitem__, self._at))
        self[name] = taken
        return taken


_TAP_TYPE_NAMES = {int(t): t.name for t in TapType}


def _messages(code: ErrorCode, v: dict[str, list[Any]], fields: list[str], lk: _Lookup,
              rules: DayRules) -> list[str]:
    """Words an operator can act on, naming the offending values: one per row of ``v`` (the
    record values of rows that all fail ``code``), the same text row by row as ever."""
    day = rules.day
    op, ln = v["operator"], v["line"]

    def lines() -> list[str]:
        return [f"line {a} of operator {b}" for a, b in zip(ln, op, strict=True)]

    def areas() -> list[int]:
        return [int(lk.operator_city[o]) if 0 <= o < 1 << 16 else 0 for o in op]

    match code:
        case ErrorCode.MISSING_VALUE:
            return [f"{f} is empty" for f in fields]
        case ErrorCode.UNKNOWN_OPERATOR:
            return [f"operator {x} is not in the registry" for x in op]
        case ErrorCode.UNKNOWN_ISSUER:
            return [f"issuer {x} is not in the registry" for x in v["issuer"]]
        case ErrorCode.UNKNOWN_CITY:
            return [f"city {x} is not a city of the circle" for x in v["city"]]
        case ErrorCode.UNKNOWN_LINE:
            return [f"{x} is not in the registry" for x in lines()]
        case ErrorCode.UNKNOWN_STOP:
            return [f"stop {x} is not in the registry" for x in v["stop"]]
        case ErrorCode.BAD_TAP_TYPE:
            return [f"tap_type {x} is not 0 FLAT, 1 ENTRY or 2 EXIT" for x in v["tap_type"]]
        case ErrorCode.BAD_PRODUCT:
            top_product = max(Product)
            return [f"product {x} is not one of 0-{top_product}" for x in v["product"]]
        case ErrorCode.BAD_MEDIA:
            top_media = max(Media)
            return [f"media {x} is not one of 0-{top_media}" for x in v["media"]]
        case ErrorCode.OUTSIDE_SERVICE_DAY:
            return [f"ts_ms {x} is outside the batch's service day {day} "
                    "(04:00 to 04:00 China Standard Time)" for x in v["ts_ms"]]
        case ErrorCode.STOP_NOT_ON_LINE:
            return [f"stop {x} is not on {y}" for x, y in zip(v["stop"], lines(), strict=True)]
        case ErrorCode.STOP_ZERO_ON_NETWORK:
            return [f"stop 0 (unknown) is allowed only on flat lines; {y} is entry-exit"
                    for y in lines()]
        case ErrorCode.BAD_DEBIT:
            return [f"debited_fen {x} is negative (only -1, account-based, is allowed)"
                    for x in v["debited_fen"]]
        case ErrorCode.CITY_MISMATCH:
            return [f"city {c} is not the city of stop {s}" if s else
                    f"city {c} is not the city of operator {o} (stop 0)"
                    for c, s, o in zip(v["city"], v["stop"], op, strict=True)]
        case ErrorCode.TAP_TYPE_LINE_MISMATCH:
            out = []
            for t, y in zip(v["tap_type"], lines(), strict=True):
                kind = _TAP_TYPE_NAMES[t] if t in _TAP_TYPE_NAMES else TapType(t).name
                out.append(f"a {kind} tap on {y}, which is "
                           f"{'entry-exit' if kind == 'FLAT' else 'flat'}")
            return out
        case ErrorCode.NO_TARIFF_VERSION:
            return [f"no tariff version of tariff area {a} (the city of operator "
                    f"{o}) is in force on the batch's service day {day}: check the "
                    "batch's day, or have the tariff set give the area a version valid then"
                    for a, o in zip(areas(), op, strict=True)]
        case ErrorCode.UNPRICEABLE_LINE:
            return [f"the tariff set prices no fare for {y} on {day} (no flat fare, no "
                    "network fares or no ordinary price for its mode): the tap cannot be priced"
                    for y in lines()]
        case ErrorCode.DEBIT_TOO_HIGH:
            bounds = rules.max_leg(np.array(op)).tolist() if op else []
            return [f"debited_fen {x} is more than one leg can cost in tariff "
                    f"area {a} on {day} ({int(b)} fen, the largest flat fare or network "
                    "max_fare in force)"
                    for x, a, b in zip(v["debited_fen"], areas(), bounds, strict=True)]
    return [code] * len(fields)
