"""The rejected rows of ``check_taps`` (``clearing.accept._row_errors``, built a column and a
check at a time) equal, byte for byte, what the former per-row builder made of the same rows:
the code, row, field, message and record of each, on generated batches of bad rows."""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clearing import accept
from clearing.accept import CHECKS, DayRules, _Lookup, check_taps
from clearing.errors import RowError
from clearing.service_day import day_bounds_ms
from clearing.taps import TAP_COLUMNS, TAP_SCHEMA, TapType
from tariffs.error_codes import ErrorCode
from tariffs.load import load_tariff_set
from tariffs.registry import load_registry
from tariffs.vocab import Media, Product

DAY = dt.date(2026, 11, 24)
REG = load_registry()
TARIFFS = load_tariff_set()
START, END = day_bounds_ms(DAY)
LINES = sorted(REG.lines.values(), key=lambda ln: ln.key)


# --------------------------------------------------------------------------- the reference
# The per-row builder as it was before it was vectorised (issue 13), kept here as the oracle.


def reference_row_errors(table: pa.Table, first: np.ndarray, null_field: np.ndarray,
                         lk: _Lookup, rules: DayRules) -> list[RowError]:
    bad = np.flatnonzero(first)
    if len(bad) == 0:
        return []
    records = table.select(list(TAP_COLUMNS)).take(pa.array(bad)).to_pylist()
    errors = []
    for row, record in zip(bad.tolist(), records, strict=True):
        check = CHECKS[int(first[row]) - 1]
        field = check.field or TAP_COLUMNS[int(null_field[row])]
        errors.append(RowError(check.code, row, field,
                               reference_message(check.code, record, field, lk, rules), record))
    return errors


def reference_message(code: ErrorCode, r: dict[str, Any], field: str, lk: _Lookup,
                      rules: DayRules) -> str:
    day = rules.day
    line = f"line {r['line']} of operator {r['operator']}"
    area = int(lk.operator_city[r["operator"]]) if 0 <= r["operator"] < 1 << 16 else 0
    match code:
        case ErrorCode.MISSING_VALUE:
            return f"{field} is empty"
        case ErrorCode.UNKNOWN_OPERATOR:
            return f"operator {r['operator']} is not in the registry"
        case ErrorCode.UNKNOWN_ISSUER:
            return f"issuer {r['issuer']} is not in the registry"
        case ErrorCode.UNKNOWN_CITY:
            return f"city {r['city']} is not a city of the circle"
        case ErrorCode.UNKNOWN_LINE:
            return f"{line} is not in the registry"
        case ErrorCode.UNKNOWN_STOP:
            return f"stop {r['stop']} is not in the registry"
        case ErrorCode.BAD_TAP_TYPE:
            return f"tap_type {r['tap_type']} is not 0 FLAT, 1 ENTRY or 2 EXIT"
        case ErrorCode.BAD_PRODUCT:
            return f"product {r['product']} is not one of 0-{max(Product)}"
        case ErrorCode.BAD_MEDIA:
            return f"media {r['media']} is not one of 0-{max(Media)}"
        case ErrorCode.OUTSIDE_SERVICE_DAY:
            return (f"ts_ms {r['ts_ms']} is outside the batch's service day {day} "
                    "(04:00 to 04:00 China Standard Time)")
        case ErrorCode.STOP_NOT_ON_LINE:
            return f"stop {r['stop']} is not on {line}"
        case ErrorCode.STOP_ZERO_ON_NETWORK:
            return f"stop 0 (unknown) is allowed only on flat lines; {line} is entry-exit"
        case ErrorCode.BAD_DEBIT:
            return (f"debited_fen {r['debited_fen']} is negative "
                    "(only -1, account-based, is allowed)")
        case ErrorCode.CITY_MISMATCH:
            return (f"city {r['city']} is not the city of stop {r['stop']}"
                    if r["stop"] else
                    f"city {r['city']} is not the city of operator {r['operator']} (stop 0)")
        case ErrorCode.TAP_TYPE_LINE_MISMATCH:
            kind = TapType(r["tap_type"]).name
            return f"a {kind} tap on {line}, which is {'entry-exit' if kind == 'FLAT' else 'flat'}"
        case ErrorCode.NO_TARIFF_VERSION:
            return (f"no tariff version of tariff area {area} (the city of operator "
                    f"{r['operator']}) is in force on the batch's service day {day}: check the "
                    "batch's day, or have the tariff set give the area a version valid then")
        case ErrorCode.UNPRICEABLE_LINE:
            return (f"the tariff set prices no fare for {line} on {day} (no flat fare, no "
                    "network fares or no ordinary price for its mode): the tap cannot be priced")
        case ErrorCode.DEBIT_TOO_HIGH:
            bound = int(rules.max_leg(np.array([r["operator"]]))[0])
            return (f"debited_fen {r['debited_fen']} is more than one leg can cost in tariff "
                    f"area {area} on {day} ({bound} fen, the largest flat fare or network "
                    "max_fare in force)")
    return code


def as_tuples(errors: list[RowError]) -> list[tuple[Any, ...]]:
    """Everything quarantine stores of a row error, with the types (a str enum is a str)."""
    return [(type(e.code), str(e.code), e.row, e.field, e.message,
             [(k, type(v), v) for k, v in e.record.items()], e.raw) for e in errors]


# --------------------------------------------------------------------------- generated rows


def value_pool(valid: list[int], invalid: list[int]) -> st.SearchStrategy[int]:
    return st.one_of(st.sampled_from(valid), st.sampled_from(invalid))


OPERATORS = value_pool(sorted({ln.operator for ln in LINES}), [0, 999, 65535])
LINE_IDS = value_pool(sorted({ln.line for ln in LINES}), [0, 777, 2**32 - 1])
STOPS = value_pool(sorted(REG.stops)[:50], [0, 0, 99_999_999])
CITIES = value_pool(sorted(REG.cities), [0, 123])
ISSUERS = value_pool(sorted(REG.issuers), [0, 65_000])


@st.composite
def bad_rows(draw: st.DrawFn, *, nulls: bool) -> dict[str, Any]:
    """A row near the registry: each field valid or not, so every check gets its turn."""
    ln = draw(st.sampled_from(LINES))
    stop = draw(st.one_of(st.sampled_from(ln.stops or [0]), STOPS))
    row: dict[str, Any] = {
        "operator": draw(st.one_of(st.just(ln.operator), OPERATORS)),
        "device_id": draw(st.integers(0, 2**63 - 1)),
        "device_seq": draw(st.integers(-(2**63), 2**63 - 1)),
        "card_id": draw(st.integers(0, 2**64 - 1)),
        "card_seq": draw(st.integers(-(2**31), 2**31 - 1)),
        "issuer": draw(ISSUERS),
        "product": draw(st.integers(0, 9)),
        "media": draw(st.integers(0, 9)),
        "ts_ms": draw(st.one_of(st.integers(START, END - 1), st.sampled_from(
            [START - 1, END, 0, 2**62]))),
        "city": draw(st.one_of(st.just(REG.stops[stop].city if stop in REG.stops else 0),
                               CITIES)),
        "line": draw(st.one_of(st.just(ln.line), LINE_IDS)),
        "stop": stop,
        "tap_type": draw(st.integers(0, 4)),
        "debited_fen": draw(st.one_of(st.integers(-3, 800), st.sampled_from(
            [-(2**31), 2**31 - 1, 100_000]))),
    }
    if nulls:  # any column but operator: the former builder failed on a null operator
        for name in draw(st.sets(st.sampled_from(TAP_COLUMNS[1:]), max_size=2)):
            row[name] = None
    return row


def _table(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.table({name: pa.array([r[name] for r in rows], TAP_SCHEMA.field(name).type)
                     for name in TAP_COLUMNS})


def _captured(table: pa.Table, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, ...]:
    """``check_taps`` on ``table``: what it hands its row builder, and what it returns."""
    seen: list[tuple[Any, ...]] = []
    builder = accept._row_errors

    def spy(*args: Any) -> list[RowError]:
        seen.append(args)
        return builder(*args)

    with monkeypatch.context() as m:
        m.setattr(accept, "_row_errors", spy)
        ok, errors = check_taps(table, REG, DAY, tariffs=TARIFFS)
    return seen[0], ok, errors


SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.function_scoped_fixture])


@SETTINGS
@given(rows=st.lists(bad_rows(nulls=True), min_size=1, max_size=60))
def test_check_taps_rejects_rows_as_the_per_row_builder_did(
        rows: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    args, ok, errors = _captured(_table(rows), monkeypatch)
    assert as_tuples(errors) == as_tuples(reference_row_errors(*args))
    assert [e.row for e in errors] == np.flatnonzero(~ok).tolist()


@SETTINGS
@given(rows=st.lists(bad_rows(nulls=False), min_size=1, max_size=60), data=st.data())
def test_every_check_formats_as_the_per_row_builder_did(
        rows: list[dict[str, Any]], data: st.DataObject,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Any check on any row (not only the first it fails), so every message is formatted on
    varied values; a TAP_TYPE_LINE_MISMATCH row has a tap type (the former builder named it)."""
    table = _table(rows)
    (_, _, null_field, lk, rules), _, _ = _captured(table, monkeypatch)
    first = np.array([data.draw(st.integers(0, len(CHECKS))) for _ in rows], dtype=np.int8)
    mismatch = 1 + CHECKS.index(next(c for c in CHECKS
                                     if c.code is ErrorCode.TAP_TYPE_LINE_MISMATCH))
    for i, r in enumerate(rows):
        if first[i] == mismatch and r["tap_type"] not in {int(t) for t in TapType}:
            first[i] = 0
    null_field = np.array([data.draw(st.integers(0, len(TAP_COLUMNS) - 1)) for _ in rows])
    got = accept._row_errors(table, first, null_field, lk, rules)
    assert as_tuples(got) == as_tuples(reference_row_errors(table, first, null_field, lk, rules))


def test_a_null_operator_is_a_missing_value() -> None:
    """The one row the former builder could not describe: it named the operator's area."""
    row = dict.fromkeys(TAP_COLUMNS, 1) | {"operator": None, "tap_type": 0}
    _, errors = check_taps(_table([row]), REG, DAY, tariffs=TARIFFS)
    assert [(e.code, e.field, e.message) for e in errors] == [
        (ErrorCode.MISSING_VALUE, "operator", "operator is empty")]
