"""Issue 13: ``tongka clear`` reads a day's stored taps a row group at a time straight into
pricing's sorted records (``clearing.sorted_day``), and everything downstream must be what the
day read as one Arrow table gave.

``sort_tap_records_streamed`` must give ``sort_tap_records``'s records byte for byte, whatever
the chunking, threads and ts span, and refuse chunks that are not the ones counted;
``read_sorted_day`` of an ingested day (several files, several row groups each, SQLite and
PostgreSQL) must give the table's records, balances (files stored before v1.2 read -1), rows,
card keys and (operator, line) pairs; the signals and the legs computed from a ``SortedDay`` or
its records must equal those of the table path, and so must a pricing error's message.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from sqlalchemy import Engine

from clearing import tapstore
from clearing.day import clear_day, read_day_legs
from clearing.errors import InputError
from clearing.fast import PricingError, RangePricer, match_and_price_fast, tap_chunks
from clearing.legs import LEG_SCHEMA, SIGNAL_LEG_COLUMNS
from clearing.parquet_io import write_atomic
from clearing.risk import EarlierKeys, day_signals
from clearing.risk_store import earlier_keys, read_day_signals, write_day_signals
from clearing.service_day import day_bounds_ms
from clearing.sorted_day import SortedDay, read_sorted_day
from clearing.sorting import RECORD_COLUMNS, TS_BITS, sort_tap_records, sort_tap_records_streamed
from clearing.taps import FULL_TAP_SCHEMA, TAP_COLUMNS, TAP_SCHEMA, TapType, balances
from clearing.tapstore import KEY_COLUMNS, day_tap_paths, read_day_taps
from tariffs.load import TariffSet, load_tariff_set
from tests.test_kernel_equality import priced_days
from tests.test_risk_store import ingest_all
from tongka.testing.generate import OPERATOR_KEY, SERVICE_DAY_KEY, generate
from tongka.testing.generate_risk import PlantedDay, plant, truth_of

T = load_tariff_set()
DAY = dt.date(2026, 11, 24)
HEALTH = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example,
          HealthCheck.function_scoped_fixture]
UINT64_MAX = 2**64 - 1
# the stored record columns' dtypes (TAP_SCHEMA)
DTYPES = {name: np.dtype(TAP_SCHEMA.field(name).type.to_pandas_dtype()) for name in RECORD_COLUMNS}


# ---------------------------------------------------------------------------------------------
# 1. sort_tap_records_streamed == sort_tap_records


def _values(dtype: np.dtype) -> st.SearchStrategy[int]:
    info = np.iinfo(dtype)
    return st.one_of(st.sampled_from((int(info.min), int(info.max), 0, 1)),
                     st.integers(int(info.min), int(info.max)))


@st.composite
def chunked_taps(draw: st.DrawFn) -> list[dict[str, np.ndarray]]:
    """RECORD_COLUMNS of up to 300 taps cut into chunks (empty ones too, first and last
    included): card ids repeated from a small pool, clustered (base + 0..k) or spread over
    uint64; ts over spans from a millisecond to beyond the packed 48 bits (the lexsort
    fallback)."""
    n = draw(st.integers(0, 300))
    shape = draw(st.sampled_from(("pool", "clustered", "spread")))
    if shape == "pool":
        pool = draw(st.lists(st.one_of(st.integers(0, 5), st.integers(0, UINT64_MAX),
                                       st.sampled_from((0, 1, UINT64_MAX - 1, UINT64_MAX))),
                             min_size=1, max_size=12))
        card = np.array(draw(st.lists(st.sampled_from(pool), min_size=n, max_size=n)),
                        np.uint64)
    elif shape == "clustered":
        base = draw(st.integers(0, UINT64_MAX - 1000))
        card = np.uint64(base) + draw(hnp.arrays(np.uint64, n, elements=st.integers(0, 999)))
    else:
        card = draw(hnp.arrays(np.uint64, n, elements=st.integers(0, UINT64_MAX)))
    t0 = draw(st.integers(-(2**40), 2**40))
    unit = draw(st.sampled_from((1, 60_000, 10**12, 2**46)))  # 10 * 2**46 > 2**48: fallback
    ts = t0 + draw(hnp.arrays(np.int64, n, elements=st.integers(-5, 5))) * unit
    cols: dict[str, np.ndarray] = {"card_id": card.astype(np.uint64), "ts_ms": ts.astype(np.int64)}
    for name in RECORD_COLUMNS:
        if name not in cols:
            small = name in ("issuer", "card_seq")  # ties within a card, then extremes
            elements = (st.sampled_from((0, 1, 2, int(np.iinfo(DTYPES[name]).max)))
                        if small else _values(DTYPES[name]))
            cols[name] = draw(hnp.arrays(DTYPES[name], n, elements=elements))
    cuts = sorted(draw(st.lists(st.integers(0, n), max_size=6)))
    bounds = [0, *cuts, n]
    return [{k: v[a:b].copy() for k, v in cols.items()}
            for a, b in zip(bounds, bounds[1:], strict=False)]


def first_read(chunks: list[dict[str, np.ndarray]]) -> tuple[list[np.ndarray], int, int]:
    """What a caller reads before the sort: every chunk's card ids, the whole ts range."""
    ts = [c["ts_ms"] for c in chunks if len(c["ts_ms"])]
    tmin = min((int(t.min()) for t in ts), default=0)
    tmax = max((int(t.max()) for t in ts), default=0)
    return [c["card_id"].copy() for c in chunks], tmin, tmax


def one_at_a_time(chunks: list[dict[str, np.ndarray]]) -> Iterator[dict[str, np.ndarray]]:
    """The chunks as a generator (read one by one, as from the files), each a fresh copy."""
    for c in chunks:
        yield {k: v.copy() for k, v in c.items()}


@settings(max_examples=300, deadline=None, suppress_health_check=HEALTH)
@given(chunked_taps(), st.integers(1, 3))
def test_streamed_records_equal_sort_tap_records(chunks: list[dict[str, np.ndarray]],
                                                 threads: int) -> None:
    card_ids, tmin, tmax = first_read(chunks)
    got = sort_tap_records_streamed(card_ids, tmin, tmax, one_at_a_time(chunks), threads=threads)
    want = sort_tap_records(chunks, threads=threads)
    assert got.dtype == want.dtype and got.shape == want.shape
    assert np.array_equal(got, want)
    assert np.array_equal(want, sort_tap_records(chunks, threads=1))  # threads change nothing


def _taps(n: int, seed: int, ts: np.ndarray | None = None) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    cols = {name: rng.integers(0, min(int(np.iinfo(DTYPES[name]).max), 2**40), n,
                               dtype=DTYPES[name]) for name in RECORD_COLUMNS}
    cols["card_id"] = rng.integers(0, 40, n).astype(np.uint64)  # a few taps per card
    if ts is not None:
        cols["ts_ms"] = ts
    cuts = [0, n // 4, n // 4, n // 2, n]  # an empty chunk among them
    return [{k: v[a:b] for k, v in cols.items()} for a, b in zip(cuts, cuts[1:], strict=False)]


@pytest.mark.parametrize("span", [(1 << TS_BITS) - 1, 1 << TS_BITS, 2**62])
@pytest.mark.parametrize("threads", [1, 3])
def test_streamed_records_at_and_beyond_the_packed_ts_span(span: int, threads: int) -> None:
    n = 200
    ts = np.random.default_rng(span % 97).integers(0, 3, n).astype(np.int64) * (span // 2)
    ts[0], ts[-1] = 0, span  # exactly this span: the last one packed, the others fall back
    chunks = _taps(n, 5, ts - 2**61)
    card_ids, tmin, tmax = first_read(chunks)
    assert tmax - tmin == span
    got = sort_tap_records_streamed(card_ids, tmin, tmax, one_at_a_time(chunks), threads=threads)
    assert np.array_equal(got, sort_tap_records(chunks, threads=threads))


def test_no_taps_give_no_records() -> None:
    empty = {name: np.zeros(0, DTYPES[name]) for name in RECORD_COLUMNS}
    got = sort_tap_records_streamed([np.zeros(0, np.uint64)] * 2, 0, 0, iter([empty, empty]))
    assert got.shape == sort_tap_records([empty, empty]).shape == (0, 8)
    assert sort_tap_records_streamed([], 0, 0, iter([])).shape == (0, 8)


@pytest.mark.parametrize("wide", [False, True], ids=["packed", "lexsort"])
def test_a_chunk_whose_card_ids_changed_is_refused(wide: bool) -> None:
    ts = np.arange(120, dtype=np.int64) * ((1 << TS_BITS) // 100 if wide else 1000)
    chunks = _taps(120, 9, ts)
    card_ids, tmin, tmax = first_read(chunks)
    changed = [dict(c) for c in chunks]
    changed[2]["card_id"] = changed[2]["card_id"].copy()
    changed[2]["card_id"][3] += np.uint64(1)  # the file changed between the reads
    with pytest.raises(ValueError, match="card ids"):
        sort_tap_records_streamed(card_ids, tmin, tmax, one_at_a_time(changed))


@pytest.mark.parametrize("wide", [False, True], ids=["packed", "lexsort"])
def test_more_or_fewer_chunks_than_counted_are_refused(wide: bool) -> None:
    ts = np.arange(120, dtype=np.int64) * ((1 << TS_BITS) // 100 if wide else 1000)
    chunks = _taps(120, 10, ts)
    card_ids, tmin, tmax = first_read(chunks)
    with pytest.raises(ValueError, match="fewer chunks"):
        sort_tap_records_streamed(card_ids, tmin, tmax, one_at_a_time(chunks[:-1]))
    with pytest.raises(ValueError, match="more chunks"):
        sort_tap_records_streamed(card_ids[:-1], tmin, tmax, one_at_a_time(chunks))


def test_chunks_of_a_day_of_no_taps_must_be_the_counted_ones() -> None:
    # nothing counted, yet a chunk of taps comes: the input changed between the reads
    chunks = _taps(20, 11)
    with pytest.raises(ValueError):
        sort_tap_records_streamed([], 0, 0, one_at_a_time(chunks))


# ---------------------------------------------------------------------------------------------
# 2. read_sorted_day of an ingested day == the day's table


_PLANTED: dict[tuple[int, int], PlantedDay] = {}


def planted(seed: int, n: int) -> PlantedDay:
    if (seed, n) not in _PLANTED:
        g = generate(DAY, n, seed, T, price=match_and_price_fast)
        _PLANTED[seed, n] = plant(DAY, g.table.filter(g.accepted_mask), seed)
    return _PLANTED[seed, n]


@pytest.fixture
def small_row_groups(monkeypatch: pytest.MonkeyPatch) -> int:
    """Stored tap files in row groups of 97 rows (the store's own writer, row groups cut)."""
    return force_row_groups(monkeypatch, 97)


def force_row_groups(monkeypatch: pytest.MonkeyPatch, rows: int) -> int:
    real = tapstore.write_atomic

    def write(table: pa.Table, path: Path, **options: Any) -> Path:
        if "row_group_size" in options:
            options["row_group_size"] = rows
        return real(table, path, **options)

    monkeypatch.setattr(tapstore, "write_atomic", write)
    return rows


def operator_batches(out: Path, table: pa.Table, day: dt.date, *, halves: bool = True,
                     balance: bool = True) -> list[Path]:
    """Canonical batches: each operator's taps in two (or one) batch files."""
    out.mkdir(parents=True, exist_ok=True)
    table = table.select(list(FULL_TAP_SCHEMA.names if balance else TAP_COLUMNS))
    ops = table.column("operator").to_numpy()
    paths = []
    for op in np.unique(ops):
        part = table.filter(pa.array(ops == op))
        cut = part.num_rows // 2 if halves else part.num_rows
        for k, piece in enumerate((part.slice(0, cut), part.slice(cut))):
            if piece.num_rows == 0:
                continue
            path = out / f"{day.isoformat()}-op{int(op)}-{k}{'' if balance else '-nobal'}.parquet"
            pq.write_table(piece.replace_schema_metadata(
                {SERVICE_DAY_KEY: day.isoformat().encode(), OPERATOR_KEY: str(int(op)).encode()}),
                path)
            paths.append(path)
    return paths


def assert_sorted_day_is_the_table(sd: SortedDay, root: Path, day: dt.date,
                                   engine: Engine | None, seed: int) -> None:
    """Every view of ``sd`` equals the same view of ``read_day_taps``'s table."""
    full = read_day_taps(root, day, engine, optional=True)
    plain = read_day_taps(root, day, engine)
    n = full.num_rows
    assert sd.num_rows == n and sd.day == day
    assert np.array_equal(sd.records, sort_tap_records(tap_chunks(plain)))
    bal = balances(full)
    if n == 0 or int(bal.max()) < 0:
        assert sd.balance is None
    else:
        assert sd.balance is not None and sd.balance.dtype == np.int64
        assert np.array_equal(sd.balance, bal)
    assert [p for p, _ in sd.files] == day_tap_paths(root, day, engine)
    assert [rows for _, rows in sd.files] == [pq.read_metadata(p).num_rows for p, _ in sd.files]
    rng = np.random.default_rng(seed)
    if n:  # rows in any order, repeated, the first and last among them
        rows = np.concatenate([[n - 1, 0], rng.integers(0, n, 40), [n - 1]]).astype(np.int64)
    else:
        rows = np.zeros(0, np.int64)
    got = sd.take(rows, list(FULL_TAP_SCHEMA.names))
    want = full.take(pa.array(rows, pa.int64()))
    for c in FULL_TAP_SCHEMA.names:
        expected = np.asarray(want.column(c).to_numpy())
        assert got[c].dtype == expected.dtype, c
        assert np.array_equal(got[c], expected), c
    few = sd.take(rows[::-1], ["device_seq", "city", "balance_fen"])  # a few columns only
    assert set(few) == {"device_seq", "city", "balance_fen"}
    for c in few:
        assert np.array_equal(few[c], got[c][::-1]), c
    keys = sd.card_keys(rows)
    whole = sd.key_columns()
    for c in ("issuer", "card_id", "card_seq"):
        expected = np.asarray(want.column(c).to_numpy())
        assert keys[c].dtype == expected.dtype and np.array_equal(keys[c], expected), c
        column = np.asarray(full.column(c).to_numpy())
        assert whole[c].dtype == column.dtype and np.array_equal(whole[c], column), c
    distinct = full.select(["operator", "line"]).group_by(["operator", "line"]).aggregate([])
    want_pairs = set(zip(distinct.column("operator").to_pylist(),
                         distinct.column("line").to_pylist(), strict=True))
    ops, lines = sd.pairs
    assert ops.dtype == np.uint16 and lines.dtype == np.uint32 and len(ops) == len(lines)
    got_pairs = list(zip(ops.tolist(), lines.tolist(), strict=True))
    assert len(got_pairs) == len(set(got_pairs)) and set(got_pairs) == want_pairs


@pytest.mark.parametrize("threads", [1, 2])
def test_read_sorted_day_of_an_ingested_day_is_its_table(
        engine: Engine, tmp_path: Path, small_row_groups: int, threads: int) -> None:
    p = planted(7, 2500)
    root = tmp_path / "data"
    ops = np.unique(p.taps.column("operator").to_numpy())
    old = np.isin(p.taps.column("operator").to_numpy(), ops[:3])
    # three operators' batches without balance_fen (stored as -1), the rest with it
    ingest_all(engine, root, operator_batches(tmp_path / "nobal", p.taps.filter(pa.array(old)),
                                              DAY, balance=False))
    ingest_all(engine, root, operator_batches(tmp_path / "in", p.taps.filter(pa.array(~old)),
                                              DAY))
    files = day_tap_paths(root, DAY, engine)
    assert len(files) > 10
    assert max(pq.ParquetFile(f).num_row_groups for f in files) >= 3  # row groups really cut
    sd = read_sorted_day(root, DAY, engine, threads=threads)
    assert sd.balance is not None and (sd.balance == -1).any() and (sd.balance >= 0).any()
    assert_sorted_day_is_the_table(sd, root, DAY, engine, seed=threads)
    with pytest.raises(ValueError, match="outside"):
        sd.take(np.array([sd.num_rows]), ["city"])


@st.composite
def stored_days(draw: st.DrawFn) -> tuple[pa.Table, list[int], int]:
    """A generated day's accepted taps, where to cut it into files (empty files too) and the
    stored row group size."""
    seed = draw(st.integers(0, 3))
    taps = _generated(seed)
    n = taps.num_rows
    cuts = sorted(draw(st.lists(st.integers(0, n), min_size=0, max_size=5)))
    return taps, [0, *cuts, n], draw(st.sampled_from((7, 50, 333, 1 << 20)))


_GENERATED: dict[int, pa.Table] = {}


def _generated(seed: int) -> pa.Table:
    if seed not in _GENERATED:
        g = generate(DAY, 800, 40 + seed, T, price=match_and_price_fast)
        taps = g.table.filter(g.accepted_mask)
        if seed % 2:  # balances on some taps (the others -1)
            p = plant(DAY, taps, seed)
            taps = p.taps
        _GENERATED[seed] = taps
    return _GENERATED[seed]


def store_files(root: Path, day: dt.date, pieces: list[pa.Table], *,
                pre_v12: frozenset[int] = frozenset()) -> None:
    """The pieces as the day's stored batch files in this order (no database: read from disk);
    the files numbered in ``pre_v12`` as written before v1.2, without a balance_fen column."""
    for k, piece in enumerate(pieces):
        rel = tapstore.batch_relpath(day, 1, f"{k:064d}")
        meta = {tapstore.META_DAY_SEQ: str(k + 1).encode()}
        if k in pre_v12:
            old = piece.select(list(TAP_COLUMNS)).cast(TAP_SCHEMA).replace_schema_metadata(meta)
            assert "balance_fen" not in old.column_names
            write_atomic(old, root / rel, row_group_size=64)
        else:
            tapstore.write_batch_taps(root, rel, piece, meta)


@settings(max_examples=12, deadline=None, suppress_health_check=HEALTH)
@given(stored_days(), st.integers(1, 3), st.integers(0, 2**16))
def test_read_sorted_day_of_stored_files_is_their_table(
        tmp_path_factory: pytest.TempPathFactory, drawn: tuple[pa.Table, list[int], int],
        threads: int, seed: int) -> None:
    taps, bounds, group_rows = drawn
    root = tmp_path_factory.mktemp("day")
    pieces = [taps.slice(a, b - a) for a, b in zip(bounds, bounds[1:], strict=False)]
    with pytest.MonkeyPatch.context() as mp:
        force_row_groups(mp, group_rows)
        store_files(root, DAY, pieces)
    sd = read_sorted_day(root, DAY, None, threads=threads)
    assert len(sd.files) == len(pieces)
    assert_sorted_day_is_the_table(sd, root, DAY, None, seed)


def test_a_day_of_no_files_is_an_empty_sorted_day(tmp_path: Path) -> None:
    sd = read_sorted_day(tmp_path, DAY)
    assert sd.records.shape == (0, 8) and sd.balance is None and sd.files == ()
    assert len(sd.pairs[0]) == len(sd.pairs[1]) == 0
    assert_sorted_day_is_the_table(sd, tmp_path, DAY, None, 0)


# ---------------------------------------------------------------------------------------------
# 3. files stored before v1.2 (no balance_fen column)


def test_a_day_of_pre_v12_files_reads_no_balance(tmp_path: Path, small_row_groups: int) -> None:
    taps = _generated(1)  # balances on its stored-value taps
    assert int(balances(taps).max()) >= 0
    n = taps.num_rows
    store_files(tmp_path, DAY, [taps.slice(0, n // 3), taps.slice(n // 3)],
                pre_v12=frozenset({0, 1}))
    assert all("balance_fen" not in pq.read_schema(p).names for p in day_tap_paths(tmp_path, DAY))
    sd = read_sorted_day(tmp_path, DAY)
    assert sd.balance is None
    assert np.array_equal(sd.take(np.arange(n), ["balance_fen"])["balance_fen"],
                          np.full(n, -1, np.int64))
    assert_sorted_day_is_the_table(sd, tmp_path, DAY, None, 3)


def test_pre_v12_files_beside_newer_ones_read_minus_one(tmp_path: Path,
                                                        small_row_groups: int) -> None:
    taps = _generated(1)
    n = taps.num_rows
    cuts = [0, n // 4, n // 2, 3 * n // 4, n]
    pieces = [taps.slice(a, b - a) for a, b in zip(cuts, cuts[1:], strict=False)]
    store_files(tmp_path, DAY, pieces, pre_v12=frozenset({1, 3}))
    sd = read_sorted_day(tmp_path, DAY, threads=2)
    assert sd.balance is not None
    stored = balances(taps)
    old = np.zeros(n, bool)
    old[cuts[1]:cuts[2]] = old[cuts[3]:cuts[4]] = True
    assert (stored[old] >= 0).any()  # the old files' taps had balances: they are not read
    assert np.array_equal(sd.balance, np.where(old, -1, stored))
    assert_sorted_day_is_the_table(sd, tmp_path, DAY, None, 4)


# ---------------------------------------------------------------------------------------------
# 4. the signals from a SortedDay == the signals from the table


def _earlier(p: PlantedDay) -> list[EarlierKeys]:
    return [EarlierKeys(p.earlier_day, {c: p.earlier.column(c).to_numpy() for c in KEY_COLUMNS})]


@pytest.mark.parametrize("seed", [29, 31])
def test_day_signals_of_a_sorted_day_equal_the_table_ones(tmp_path: Path,
                                                          small_row_groups: int,
                                                          seed: int) -> None:
    p = planted(seed, 4000)
    n = p.taps.num_rows
    store_files(tmp_path, DAY, [p.taps.slice(0, n // 3), p.taps.slice(n // 3, n // 3),
                                p.taps.slice(2 * n // 3)])
    sd = read_sorted_day(tmp_path, DAY)
    full = read_day_taps(tmp_path, DAY, optional=True)
    legs = match_and_price_fast(full.select(list(TAP_COLUMNS)), T)
    records = sort_tap_records(tap_chunks(full.select(list(TAP_COLUMNS))))
    want = day_signals(DAY, full, legs, earlier=_earlier(p), records=records)
    got = day_signals(DAY, sd, legs, earlier=_earlier(p))
    assert truth_of(want) == set(p.truth)  # every planted kind is there to compare
    assert got.equals(want)
    assert got.equals(day_signals(DAY, full, legs, earlier=_earlier(p), reference=True))
    # the leg columns clear_day keeps for the signals, and no legs at all
    kept = legs.select(list(SIGNAL_LEG_COLUMNS))
    assert day_signals(DAY, sd, kept, earlier=_earlier(p)).equals(
        day_signals(DAY, full, kept, earlier=_earlier(p), records=records))
    assert day_signals(DAY, sd, None).equals(day_signals(DAY, full, None, records=records))


def test_the_reference_signals_refuse_a_sorted_day(tmp_path: Path) -> None:
    store_files(tmp_path, DAY, [_generated(1)])
    with pytest.raises(InputError) as err:
        day_signals(DAY, read_sorted_day(tmp_path, DAY), None, reference=True)
    assert err.value.code == "RISK_REFERENCE_NEEDS_TABLE"


def test_day_signals_of_a_sorted_day_without_balances(tmp_path: Path) -> None:
    p = planted(29, 4000)
    store_files(tmp_path, DAY, [p.taps], pre_v12=frozenset({0}))
    sd = read_sorted_day(tmp_path, DAY)
    full = read_day_taps(tmp_path, DAY, optional=True)
    legs = match_and_price_fast(full.select(list(TAP_COLUMNS)), T)
    assert sd.balance is None
    want = day_signals(DAY, full, legs, earlier=_earlier(p),
                       records=sort_tap_records(tap_chunks(full.select(list(TAP_COLUMNS)))))
    assert "BALANCE_BREAK" not in {k for k, _, _ in truth_of(want)}
    assert day_signals(DAY, sd, legs, earlier=_earlier(p)).equals(want)


def test_clear_day_signals_equal_the_table_path(engine: Engine, tmp_path: Path,
                                                small_row_groups: int) -> None:
    p = planted(7, 3000)
    root = tmp_path / "data"
    ingest_all(engine, root, operator_batches(tmp_path / "early", p.earlier, p.earlier_day,
                                              halves=False))
    ingest_all(engine, root, operator_batches(tmp_path / "in", p.taps, DAY))
    assert max(pq.ParquetFile(f).num_row_groups for f in day_tap_paths(root, DAY, engine)) >= 3
    result = clear_day(root, DAY, T, engine=engine)
    cleared = read_day_signals(root, DAY)
    assert cleared is not None and result.signals == cleared.num_rows
    assert truth_of(cleared) == set(p.truth)
    full = read_day_taps(root, DAY, engine, optional=True)
    legs = read_day_legs(root, DAY)
    assert legs.equals(match_and_price_fast(full.select(list(TAP_COLUMNS)), T))
    # the table path, from what the day's stored earlier keys give
    want = day_signals(DAY, full, legs, earlier=earlier_keys(root, DAY, engine))
    assert cleared.select(want.column_names).equals(want)
    write_day_signals(root, DAY, full, legs, engine=engine)  # the table path writes the same
    rewritten = read_day_signals(root, DAY)
    assert rewritten is not None and rewritten.equals(cleared)


# ---------------------------------------------------------------------------------------------
# 5. RangePricer on the records == RangePricer on the table


def _legs(pricer: RangePricer) -> pa.Table:
    pieces = list(pricer.legs())
    return pa.concat_tables(pieces) if pieces else LEG_SCHEMA.empty_table()


@settings(max_examples=60, deadline=None, suppress_health_check=HEALTH)
@given(priced_days(), st.integers(1, 64), st.integers(1, 3))
def test_pricing_records_gives_the_table_legs(drawn: tuple[TariffSet, pa.Table],
                                              range_taps: int, threads: int) -> None:
    tariffs, taps = drawn
    table = RangePricer(taps, tariffs, keep=SIGNAL_LEG_COLUMNS, range_taps=range_taps,
                        threads=threads)
    records = sort_tap_records(tap_chunks(taps), threads=threads)
    given_records = RangePricer(None, tariffs, keep=SIGNAL_LEG_COLUMNS, range_taps=range_taps,
                                threads=threads, records=records)
    want = _legs(table)
    assert _legs(given_records).equals(want)
    assert given_records.kept().equals(table.kept())
    assert np.array_equal(given_records.records, table.records)


def test_pricing_takes_a_table_or_records_not_both() -> None:
    taps = _generated(0)
    with pytest.raises(ValueError):
        RangePricer(None, T)
    with pytest.raises(ValueError):
        RangePricer(taps, T, records=sort_tap_records(tap_chunks(taps)))


def _bad_tap(**fields: int) -> dict[str, int]:
    base = {"operator": 101, "device_id": 77, "device_seq": 1, "card_id": 2**63 + 12345,
            "card_seq": 3, "issuer": 1, "product": 0, "media": 0, "city": 420100, "line": 1,
            "stop": 0, "tap_type": int(TapType.FLAT), "debited_fen": -1,
            "ts_ms": day_bounds_ms(DAY)[0] + 3600_000}
    base.update(fields)
    return base


@pytest.mark.parametrize(("tap", "code"), [
    ({"line": 9999}, "UNKNOWN_LINE"),  # a line the operator does not run
    ({"operator": 102, "line": 1, "stop": 100101}, "LINE_NOT_PRICED"),  # FLAT on the metro
    ({"tap_type": int(TapType.ENTRY)}, "NETWORK_NOT_PRICED"),  # ENTRY on a flat line
    ({"ts_ms": day_bounds_ms(dt.date(2000, 1, 1))[0]}, "NO_VERSION"),  # before any tariff
])
@pytest.mark.parametrize("where", [0.0, 0.37, 1.0])
def test_a_pricing_error_names_the_same_tap_from_records(tap: dict[str, int], code: str,
                                                         where: float) -> None:
    day = _generated(0).select(list(TAP_COLUMNS))
    at = int(where * day.num_rows)
    bad = pa.Table.from_pylist([_bad_tap(**tap)], schema=TAP_SCHEMA)
    # a day read from several files: the bad tap inside one of several chunks
    taps = pa.concat_tables([day.slice(0, at // 2), day.slice(at // 2, at - at // 2), bad,
                             day.slice(at)])
    with pytest.raises(PricingError) as from_table:
        _legs(RangePricer(taps, T, range_taps=50, threads=2))
    records = sort_tap_records(tap_chunks(taps))
    with pytest.raises(PricingError) as from_records:
        _legs(RangePricer(None, T, range_taps=50, threads=2, records=records))
    assert from_table.value.code == from_records.value.code == code
    message = str(from_records.value)
    assert message == str(from_table.value)
    assert f"input row {at} " in message and f"'card_id': {2**63 + 12345}" in message

