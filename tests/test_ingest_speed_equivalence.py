"""The fast acceptance and quarantine paths (issue 13) equal the code they replaced.

``clearing.accept.check_taps`` now checks each row in one kernel pass (``_first_failures``) a
record batch at a time, ``DayRules.status`` is a kernel, ``_row_errors`` groups rows by check,
and ``clearing.ingest._quarantine`` makes record texts a chunk at a time. The former whole-column
numpy checks, per-row record JSON and row tuples are kept here as the reference twins; on
generated batches full of invalid rows (nulls, unknown codes, every check's failure, tables
of many chunks, indices without a direct-address table) both give the same accepted rows, the
same ``RowError`` values and the same stored quarantine rows, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
from collections.abc import Callable, Sequence
from typing import Any, cast

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, Table, insert, select
from test_accept_row_errors import as_tuples, value_pool

from clearing import accept, ingest
from clearing.accept import CHECKS, DayRules, _Lookup, day_rules
from clearing.batches import Batch, QuarantinedRow, QuarantineStatus
from clearing.db import transaction
from clearing.errors import RowError
from clearing.sealed import Sealer, quarantine_context, unseal
from clearing.service_day import day_bounds_ms
from clearing.taps import ACCOUNT_BASED, TAP_COLUMNS, TAP_SCHEMA, TapType
from tariffs.compile import NO_INDEX
from tariffs.load import TariffSet, load_tariff_set
from tariffs.registry import FLAT, Registry, load_registry
from tariffs.vocab import Media, Product

DAY = dt.date(2026, 11, 24)
REG = load_registry()
TARIFFS = load_tariff_set()
START, END = day_bounds_ms(DAY)
LINES = sorted(REG.lines.values(), key=lambda ln: ln.key)
# the batch's day, and days no version (or fewer versions) of some area is in force
DAYS = [DAY, dt.date(2000, 1, 3), dt.date(2026, 1, 1), dt.date(2099, 12, 31)]

SETTINGS = settings(max_examples=40, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.function_scoped_fixture])


# --------------------------------------------------------------------------- reference twins
# check_taps, DayRules.status and _row_errors as they were before issue 13's kernels.


def reference_gather(index: np.ndarray, values: np.ndarray) -> np.ndarray:
    v = np.asarray(values, dtype=np.int64)
    inside = (v >= 0) & (v < len(index))
    return np.where(inside, index[np.where(inside, v, 0)], NO_INDEX).astype(np.int64)


def reference_status(rules: DayRules, operator: np.ndarray, line: np.ndarray) -> np.ndarray:
    o = reference_gather(rules.operator_index, operator)
    width = rules.line_index.shape[1]
    ln = np.asarray(line, dtype=np.int64)
    inside = (o >= 0) & (ln >= 0) & (ln < width)
    lines = np.where(inside, rules.line_index[np.maximum(o, 0), np.where(inside, ln, 0)],
                     NO_INDEX)
    area = np.where(o >= 0, rules.operator_area[np.maximum(o, 0)], NO_INDEX)
    in_force = (area >= 0) & rules.area_in_force[np.maximum(area, 0)]
    covered = (lines >= 0) & rules.line_priceable[np.maximum(lines, 0)]
    out = np.full(len(o), accept.PRICEABLE, dtype=np.int8)
    out[~covered] = accept.UNPRICEABLE_LINE
    out[(area >= 0) & ~in_force] = accept.NO_TARIFF_VERSION
    return out


def reference_first(table: pa.Table, registry: Registry, day: dt.date, tariffs: TariffSet
                    ) -> tuple[np.ndarray, np.ndarray, _Lookup, DayRules]:
    """(first failing check per row, first null column per row, lookup, rules), whole-column."""
    n = table.num_rows
    lk = accept._lookup(registry)
    rules = day_rules(tariffs, day)
    null_any = np.zeros(n, dtype=bool)
    null_field = np.full(n, -1, dtype=np.int64)
    cols: dict[str, np.ndarray] = {}
    for i, name in enumerate(TAP_COLUMNS):
        col = table.column(name)
        nulls = (col.is_null().to_numpy(zero_copy_only=False) if col.null_count
                 else np.zeros(n, dtype=bool))
        col = col.fill_null(0) if col.null_count else col
        cols[name] = np.asarray(col.to_numpy(), dtype=TAP_SCHEMA.field(name).type.to_pandas_dtype())
        null_field[nulls & ~null_any] = i
        null_any |= nulls
    op, stop, city, tap_type = cols["operator"], cols["stop"], cols["city"], cols["tap_type"]
    stride = lk.line_stride
    line_key = (lk.operator_index[op] * stride).astype(np.uint64) + np.minimum(
        cols["line"], stride - 1).astype(np.uint64)
    line_idx, line_known = lk.lines.find(line_key)
    network = np.where(line_known, lk.line_network[line_idx], FLAT)
    stop_idx, stop_known = lk.stops.find(stop)
    on_line = lk.on_line[line_idx, stop_idx] & stop_known
    _, city_known = lk.cities.find(city)
    start, end = day_bounds_ms(day)
    ts, debit = cols["ts_ms"], cols["debited_fen"]
    zero = stop == 0
    expected_city = np.where(zero, lk.operator_city[op], lk.stop_city[stop_idx])
    flat_line = network == FLAT
    pricing = reference_status(rules, op, cols["line"])
    o = reference_gather(rules.operator_index, op)
    area = np.where(o >= 0, rules.operator_area[np.maximum(o, 0)], NO_INDEX)
    max_leg = np.where(area >= 0, rules.area_max_leg[np.maximum(area, 0)], -1)
    failing: list[Callable[[], np.ndarray]] = [
        lambda: null_any,
        lambda: ~lk.operator_known[op],
        lambda: ~lk.issuer_known[cols["issuer"]],
        lambda: ~city_known,
        lambda: ~line_known,
        lambda: ~zero & ~stop_known,
        lambda: ~np.isin(tap_type, [int(t) for t in TapType]),
        lambda: ~np.isin(cols["product"], [int(p) for p in Product]),
        lambda: ~np.isin(cols["media"], [int(m) for m in Media]),
        lambda: (ts < start) | (ts >= end),
        lambda: ~zero & ~on_line,
        lambda: zero & ~flat_line,
        lambda: debit < ACCOUNT_BASED,
        lambda: city != expected_city,
        lambda: np.where(flat_line, tap_type != TapType.FLAT, tap_type == TapType.FLAT),
        lambda: pricing == accept.NO_TARIFF_VERSION,
        lambda: pricing == accept.UNPRICEABLE_LINE,
        lambda: (debit >= 0) & (debit > max_leg),
    ]
    assert len(failing) == len(CHECKS)
    first = np.zeros(n, dtype=np.int8)
    undecided = np.ones(n, dtype=bool)
    for k, fails_of in enumerate(failing, start=1):
        fails = fails_of() & undecided
        first[fails] = k
        undecided &= ~fails
    return first, null_field, lk, rules


def reference_row_errors(table: pa.Table, first: np.ndarray, null_field: np.ndarray,
                         lk: _Lookup, rules: DayRules) -> list[RowError]:
    """The former ``_row_errors``: its message texts are ``accept._messages``' (unchanged, and
    checked against the per-row builder in tests/test_accept_row_errors.py)."""
    bad = np.flatnonzero(first)
    if len(bad) == 0:
        return []
    sub = table.select(list(TAP_COLUMNS)).take(pa.array(bad))
    values = {name: sub.column(name).to_pylist() for name in TAP_COLUMNS}
    records = [dict(zip(TAP_COLUMNS, row, strict=True))
               for row in zip(*values.values(), strict=True)]
    kind = first[bad]
    fields: list[str] = [""] * len(bad)
    messages: list[str] = [""] * len(bad)
    for k in np.unique(kind).tolist():
        at = np.flatnonzero(kind == k)
        check = CHECKS[k - 1]
        field_of = ([check.field] * len(at) if check.field
                    else [TAP_COLUMNS[f] for f in null_field[bad[at]].tolist()])
        at_list = at.tolist()
        texts = accept._messages(check.code, {name: [v[i] for i in at_list]
                                              for name, v in values.items()},
                                 field_of, lk, rules)
        for i, f, m in zip(at_list, field_of, texts, strict=True):
            fields[i] = f
            messages[i] = m
    codes = [CHECKS[k - 1].code for k in kind.tolist()]
    return [RowError(code, row, f, m, record) for code, row, f, m, record
            in zip(codes, bad.tolist(), fields, messages, records, strict=True)]


def reference_check_taps(table: pa.Table, day: dt.date, tariffs: TariffSet
                         ) -> tuple[np.ndarray, list[RowError]]:
    first, null_field, lk, rules = reference_first(table, REG, day, tariffs)
    return first == 0, reference_row_errors(table, first, null_field, lk, rules)


# --------------------------------------------------------------------------- generated batches


OPERATORS = value_pool(sorted({ln.operator for ln in LINES}), [0, 999, 65535])
LINE_IDS = value_pool(sorted({ln.line for ln in LINES}), [0, 777, 2**32 - 1])
STOPS = value_pool(sorted(REG.stops), [0, 99_999_999, 2**32 - 1])
CITIES = value_pool(sorted(REG.cities), [0, 123, 2**32 - 1])
ISSUERS = value_pool(sorted(REG.issuers), [0, 65_000])


def _with_versions(ts: TariffSet, area: int, change: Callable[[Any], Any],
                   first_only: bool = False) -> TariffSet:
    t = ts.tariffs[area]
    versions = [change(v) for v in (t.versions[:1] if first_only else t.versions)]
    return TariffSet(ts.registry, {**ts.tariffs, area: t.model_copy(update={"versions": versions})},
                     ts.contracts)


_FLAT_OP = next(ln.operator for ln in LINES if ln.network == FLAT)
_NET_OP = next(ln.operator for ln in LINES if ln.network != FLAT)
# tariff sets that leave some lines unpriced or some area without a version on DAY (built in
# code as tests/test_accept_priceable.py does: validation would refuse them)
TARIFF_SETS = [
    TARIFFS,
    _with_versions(TARIFFS, REG.operators[_FLAT_OP].city, lambda v: v.model_copy(update={
        "line_fares": [lf for lf in v.line_fares if lf.operator != _FLAT_OP]})),
    _with_versions(TARIFFS, REG.operators[_NET_OP].city,
                   lambda v: v.model_copy(update={"networks": [], "rebates": []})),
    _with_versions(TARIFFS, REG.operators[_FLAT_OP].city, lambda v: v.model_copy(
        update={"valid_from": DAY + dt.timedelta(days=1)}), first_only=True),
]


# a value of each field that fails a check (alone, or after another field's)
CORRUPT: dict[str, st.SearchStrategy[Any]] = {
    "operator": OPERATORS,
    "issuer": ISSUERS,
    "city": CITIES,
    "line": LINE_IDS,
    "stop": st.one_of(st.just(0), STOPS),
    "tap_type": st.integers(0, 4),
    "product": st.integers(0, 9),
    "media": st.integers(0, 9),
    "ts_ms": st.sampled_from([START - 1, END, 0, 2**62]),
    "debited_fen": st.sampled_from([-2, -(2**31), 2**31 - 1, 100_000]),
}


@st.composite
def taps(draw: st.DrawFn) -> dict[str, Any]:
    """A valid tap on a registry line, with up to three fields made wrong or null (so every
    check is the first to fail some row)."""
    ln = draw(st.sampled_from(LINES) | st.sampled_from([ln for ln in LINES if ln.network]))
    flat = ln.network == FLAT
    stop = draw(st.sampled_from([*ln.stops, 0] if flat else ln.stops))
    row: dict[str, Any] = {
        "operator": ln.operator,
        "device_id": draw(st.integers(0, 2**63 - 1)),
        "device_seq": draw(st.integers(-(2**63), 2**63 - 1)),
        "card_id": draw(st.integers(0, 2**64 - 1)),
        "card_seq": draw(st.integers(-(2**31), 2**31 - 1)),
        "issuer": draw(st.sampled_from(sorted(REG.issuers))),
        "product": int(draw(st.sampled_from(list(Product)))),
        "media": int(draw(st.sampled_from(list(Media)))),
        "ts_ms": draw(st.integers(START, END - 1)),
        "city": REG.stops[stop].city if stop else REG.operators[ln.operator].city,
        "line": ln.line,
        "stop": stop,
        "tap_type": int(TapType.FLAT) if flat else draw(st.sampled_from([1, 2])),
        "debited_fen": draw(st.integers(-1, 800)),
    }
    for name in draw(st.sets(st.sampled_from(sorted(CORRUPT)), max_size=3)):
        row[name] = draw(CORRUPT[name])
    if draw(st.integers(0, 7)) == 0:
        row[draw(st.sampled_from(TAP_COLUMNS))] = None
    return row


@st.composite
def batches(draw: st.DrawFn) -> pa.Table:
    """A table of one to five record batches (check_taps works a record batch at a time)."""
    rows = draw(st.lists(taps(), min_size=0, max_size=80))
    cuts = sorted(draw(st.lists(st.integers(0, len(rows)), max_size=4)))
    parts = [rows[a:b] for a, b in zip([0, *cuts], [*cuts, len(rows)], strict=True)]
    return pa.Table.from_batches(
        [pa.RecordBatch.from_pydict({name: pa.array([r[name] for r in part],
                                                    TAP_SCHEMA.field(name).type)
                                     for name in TAP_COLUMNS}, schema=TAP_SCHEMA)
         for part in parts], schema=TAP_SCHEMA)


def _assert_same(table: pa.Table, day: dt.date, tariffs: TariffSet = TARIFFS) -> None:
    ok, errors = accept.check_taps(table, REG, day, tariffs=tariffs)
    ref_ok, ref_errors = reference_check_taps(table, day, tariffs)
    assert ok.dtype == ref_ok.dtype and ok.tolist() == ref_ok.tolist()
    assert as_tuples(errors) == as_tuples(ref_errors)


@SETTINGS
@given(table=batches(), day=st.sampled_from(DAYS), tariffs=st.sampled_from(TARIFF_SETS))
def test_check_taps_equals_the_whole_column_checks(table: pa.Table, day: dt.date,
                                                   tariffs: TariffSet) -> None:
    _assert_same(table, day, tariffs)


@SETTINGS
@given(table=batches())
def test_without_direct_address_tables_too(table: pa.Table,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Ids too large for a table are searched by numpy before the kernel (``_Index.resolve``)."""
    with monkeypatch.context() as m:
        m.setattr(accept, "DENSE_LIMIT", 0)
        m.setattr(accept, "_LOOKUPS", {})
        lk = accept._lookup(REG)
        assert lk.cities.table is None and lk.lines.table is None and lk.stops.table is None
        _assert_same(table, DAY)


def test_every_check_fails_some_generated_row() -> None:
    """The generator reaches every check (else the equality above proves less than it says)."""
    seen: set[int] = set()

    @settings(max_examples=300, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(table=batches(), tariffs=st.sampled_from(TARIFF_SETS))
    def collect(table: pa.Table, tariffs: TariffSet) -> None:
        seen.update(reference_first(table, REG, DAY, tariffs)[0].tolist())

    collect()
    assert seen == set(range(len(CHECKS) + 1))


def test_a_null_filled_column_in_a_later_batch_numbers_rows_across_batches() -> None:
    good = {"operator": LINES[0].operator, "device_id": 1, "device_seq": 1, "card_id": 1,
            "card_seq": 1, "issuer": sorted(REG.issuers)[0], "product": 0, "media": 0,
            "ts_ms": START, "city": 0, "line": LINES[0].line, "stop": 0, "tap_type": 0,
            "debited_fen": -1}
    parts = [[good] * 3, [good, good | {"stop": None}, good | {"line": None, "city": None}]]
    table = pa.Table.from_batches([pa.RecordBatch.from_pylist(p, schema=TAP_SCHEMA)
                                   for p in parts])
    _, errors = accept.check_taps(table, REG, DAY, tariffs=TARIFFS)
    missing = [(e.row, e.field) for e in errors if e.code == "MISSING_VALUE"]
    assert missing == [(4, "stop"), (5, "city")]
    _assert_same(table, DAY)


@SETTINGS
@given(operator=st.lists(st.one_of(st.integers(-5, 70_000), OPERATORS), max_size=60),
       data=st.data(), day=st.sampled_from(DAYS), tariffs=st.sampled_from(TARIFF_SETS))
def test_status_equals_the_whole_column_status(operator: list[int], data: st.DataObject,
                                               day: dt.date, tariffs: TariffSet) -> None:
    line = data.draw(st.lists(st.one_of(st.integers(-5, 3000), LINE_IDS),
                              min_size=len(operator), max_size=len(operator)))
    rules = day_rules(tariffs, day)
    for op, ln in ((np.array(operator, dtype=np.int64), np.array(line, dtype=np.int64)),
                   (np.array(operator, dtype=np.int64).clip(0, 65535).astype(np.uint16),
                    np.array(line, dtype=np.int64).clip(0).astype(np.uint32))):
        got = rules.status(op, ln)
        assert got.dtype == np.int8
        assert got.tolist() == reference_status(rules, op, ln).tolist()


# --------------------------------------------------------------------------- quarantine


def reference_record_json(record: dict[str, Any]) -> str:
    return json.JSONEncoder(default=str, ensure_ascii=False).encode(record)


def reference_raw_bytes(e: RowError) -> bytes:
    return e.raw or json.dumps(e.record, default=str, ensure_ascii=False,
                               sort_keys=True).encode()


values = st.one_of(st.integers(-(2**70), 2**70), st.none(), st.booleans(),
                   st.just(TapType.EXIT), st.floats(allow_nan=False), st.text(max_size=5),
                   st.dates())
tap_records = st.fixed_dictionaries({c: st.integers(-(2**64), 2**65) for c in TAP_COLUMNS})
records = st.one_of(
    tap_records, tap_records, tap_records,
    st.fixed_dictionaries({c: values for c in TAP_COLUMNS}),
    st.fixed_dictionaries({c: st.one_of(st.integers(), st.booleans()) for c in TAP_COLUMNS}),
    st.permutations(list(TAP_COLUMNS)).map(lambda cols: {c: 7 for c in cols}),
    st.dictionaries(st.sampled_from([*TAP_COLUMNS, "source_row", "x"]), values, max_size=16),
)


@given(rs=st.lists(records, max_size=12))
def test_record_texts_are_the_encoders(rs: list[dict[str, Any]]) -> None:
    assert ingest._records_json(rs) == [reference_record_json(r) for r in rs]
    assert ingest._records_json(rs, sort_keys=True) == [
        json.dumps(r, default=str, ensure_ascii=False, sort_keys=True) for r in rs]


@given(rs=st.lists(st.tuples(records, st.binary(max_size=3)), max_size=12))
def test_raw_bytes_are_the_former(rs: list[tuple[dict[str, Any], bytes]]) -> None:
    errors = [RowError("BAD_RECORD", i, "", "", r, raw) for i, (r, raw) in enumerate(rs)]
    assert ingest._raws(errors, [e.record for e in errors]) == [
        reference_raw_bytes(e) for e in errors]


def reference_quarantine(s: Any, batch_id: int, errors: Sequence[RowError], sha: str,
                         key: bytes | None) -> None:
    """The former per-row tuples (their values are what SQLAlchemy's Core insert stored)."""
    sealer = Sealer(key) if key is not None else None
    if not errors:  # the former loop over chunks inserted nothing
        return
    s.execute(insert(cast(Table, QuarantinedRow.__table__)), [
        {"batch_id": batch_id, "row": e.row, "code": str(e.code), "field": e.field,
         "message": e.message, "record": reference_record_json(e.record),
         "status": QuarantineStatus.OPEN, "resubmitted_batch_id": None,
         "raw_sealed": None if sealer is None else sealer.seal(
             reference_raw_bytes(e), context=quarantine_context(sha, e.row))}
        for e in errors])


_BATCHES = itertools.count(1)


def _batch(engine: Engine) -> int:
    n = next(_BATCHES)
    now = dt.datetime.now(dt.UTC)
    with transaction(engine) as s:
        b = Batch(file_sha256=f"{n:064x}", service_day=DAY, day_seq=n,
                  operator=101, source_format="canonical", source_name="q.parquet",
                  status="accepted", late=False, received=1, accepted=0, duplicates=0,
                  quarantined=1, tap_path=None, dup_path=None, errors_json="{}",
                  received_at=now, accepted_at=now)
        s.add(b)
        s.flush()
        return int(b.id)


@settings(max_examples=8, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(table=batches(), extra=st.lists(st.tuples(records, st.binary(max_size=3)), max_size=4),
       key=st.sampled_from([None, bytes(range(32))]), chunk=st.sampled_from([2, 20_000]))
def test_quarantined_rows_are_stored_as_before(
        engine: Engine, table: pa.Table, extra: list[tuple[dict[str, Any], bytes]],
        key: bytes | None, chunk: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """A generated batch's rejected rows (and an adapter's odd ones) stored by both, compared
    column by column as read back; sealed raw records (random nonces) by what they open to."""
    _, row_errors = accept.check_taps(table, REG, DAY, tariffs=TARIFFS)
    errors = sorted([*row_errors, *(RowError("BAD_RECORD", 1000 + i, "x", "m", r, raw)
                                    for i, (r, raw) in enumerate(extra))], key=lambda e: e.row)
    sha = "cd" * 32
    stored = {}
    for name, fn in (("former", reference_quarantine), ("now", ingest._quarantine)):
        batch_id = _batch(engine)
        with monkeypatch.context() as m:
            m.setattr(ingest, "_QUARANTINE_CHUNK", chunk)
            with transaction(engine) as s:
                fn(s, batch_id, errors, sha, key)
        with transaction(engine) as s:
            rows = s.execute(select(QuarantinedRow).where(QuarantinedRow.batch_id == batch_id)
                             .order_by(QuarantinedRow.id)).scalars().all()
            stored[name] = [(r.row, r.code, r.field, r.message, r.record, r.status,
                             r.resubmitted_batch_id, r.raw_sealed is None) for r in rows]
            if key is not None:
                assert [unseal(key, r.raw_sealed, context=quarantine_context(sha, r.row))
                        for r in rows] == [reference_raw_bytes(e) for e in errors]
    assert stored["now"] == stored["former"]
    assert len(stored["now"]) == len(errors)
