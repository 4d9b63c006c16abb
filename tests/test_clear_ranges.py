"""Issue 13: `tongka clear` prices a day a range of card-days at a time and streams its legs.

``clearing.fast.RangePricer`` (what ``clear_day`` runs) must give, for any range size from one
tap up, the legs ``match_and_price_sorted`` gives for the whole day (row for row), the same
sorted records, and the signals' leg columns as those of the whole table;
``clearing.parquet_io.write_atomic_stream`` must write the file ``write_atomic`` writes of the
tables put end to end (rows, row groups, metadata), and leave the old file when a table fails.
A cleared day is the same whatever the range size: legs file, signals and deny list.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine

import clearing.parquet_io as parquet_io
from clearing.day import clear_day
from clearing.fast import RangePricer, match_and_price_fast, match_and_price_sorted
from clearing.ingest import ingest_file
from clearing.legs import LEG_DICTIONARY_COLUMNS, LEG_SCHEMA, SIGNAL_LEG_COLUMNS
from clearing.parquet_io import write_atomic, write_atomic_stream
from clearing.risk import day_signals
from tariffs.load import TariffSet, load_tariff_set
from tests.test_kernel_equality import priced_days
from tongka.testing.generate import generate, write_day

HEALTH = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example]
DAY = dt.date(2026, 11, 24)
TARIFFS = load_tariff_set()


def _ranged(taps: pa.Table, tariffs: TariffSet, range_taps: int, threads: int
            ) -> tuple[RangePricer, list[pa.Table]]:
    pricer = RangePricer(taps, tariffs, keep=SIGNAL_LEG_COLUMNS, range_taps=range_taps,
                         threads=threads)
    return pricer, list(pricer.legs())


@settings(max_examples=200, deadline=None, suppress_health_check=HEALTH)
@given(priced_days(), st.one_of(st.just(1), st.integers(1, 64)), st.integers(1, 3))
def test_ranges_give_the_whole_day_legs(drawn: tuple[TariffSet, pa.Table], range_taps: int,
                                        threads: int) -> None:
    tariffs, taps = drawn
    whole, records = match_and_price_sorted(taps, tariffs)
    pricer, pieces = _ranged(taps, tariffs, range_taps, threads)
    got = pa.concat_tables(pieces) if pieces else LEG_SCHEMA.empty_table()
    assert got.equals(whole)
    assert np.array_equal(pricer.records, records)
    assert pricer.kept().equals(whole.select(list(SIGNAL_LEG_COLUMNS)))
    if range_taps == 1:  # every card-day a range of its own: the day was cut everywhere
        days = whole.select(["card_id", "issuer", "service_day"]).group_by(
            ["card_id", "issuer", "service_day"]).aggregate([])
        assert len(pieces) == days.num_rows


def _day_taps(seed: int, n_taps: int) -> pa.Table:
    day = generate(DAY, n_taps, seed, TARIFFS, price=match_and_price_fast)
    return day.table.filter(pa.array(day.accepted_mask))


@pytest.mark.parametrize("range_taps", [1, 7, 100, 1000, 1 << 20])
def test_ranges_of_a_generated_day(range_taps: int) -> None:
    taps = _day_taps(5, 4000)
    whole, _ = match_and_price_sorted(taps, TARIFFS)
    _, pieces = _ranged(taps, TARIFFS, range_taps, 2)
    assert pa.concat_tables(pieces).equals(whole)
    if range_taps < 1000:
        assert len(pieces) > 3  # the day was really cut


def _pieces(table: pa.Table, cuts: list[int]) -> Iterator[pa.Table]:
    bounds = sorted({0, table.num_rows, *(c for c in cuts if c < table.num_rows)})
    for a, b in zip(bounds, bounds[1:], strict=False):
        yield table.slice(a, b - a)


@pytest.mark.parametrize("rows", [0, 1, 10, 64, 257])
@pytest.mark.parametrize("cuts", [[], [1], [3, 9, 10, 11, 200], list(range(0, 300, 5))])
def test_streamed_file_is_the_whole_table_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              rows: int, cuts: list[int]) -> None:
    monkeypatch.setattr(parquet_io, "ROW_GROUP_ROWS", 16)  # several row groups
    legs = pa.concat_tables([_day_legs_sample()] * 2).slice(0, rows)
    meta = {b"tongka.revision": b"7"}
    legs = legs.replace_schema_metadata(meta)
    a, b = tmp_path / "whole.parquet", tmp_path / "stream.parquet"
    write_atomic(legs, a, row_group_size=16, use_dictionary=list(LEG_DICTIONARY_COLUMNS))
    write_atomic_stream(_pieces(legs, cuts), LEG_SCHEMA.with_metadata(meta), b,
                        use_dictionary=list(LEG_DICTIONARY_COLUMNS))
    fa, fb = pq.ParquetFile(a), pq.ParquetFile(b)
    assert fb.schema_arrow.metadata[b"tongka.revision"] == b"7"
    assert [fb.metadata.row_group(i).num_rows for i in range(fb.num_row_groups)] == [
        fa.metadata.row_group(i).num_rows for i in range(fa.num_row_groups)]
    assert pq.read_table(b).equals(pq.read_table(a))
    assert a.read_bytes() == b.read_bytes()


_SAMPLE: list[pa.Table] = []


def _day_legs_sample() -> pa.Table:
    if not _SAMPLE:
        _SAMPLE.append(match_and_price_fast(_day_taps(3, 400), TARIFFS))
    assert _SAMPLE[0].num_rows > 150
    return _SAMPLE[0]


def test_a_failing_stream_leaves_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "legs.parquet"
    legs = _day_legs_sample()
    write_atomic(legs, path)
    before = path.read_bytes()

    def broken() -> Iterator[pa.Table]:
        yield legs.slice(0, 10)
        raise RuntimeError("pricing failed half way")

    with pytest.raises(RuntimeError):
        write_atomic_stream(broken(), LEG_SCHEMA, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["legs.parquet"]  # no temporary left


def _cleared(data: Path, engine: Engine, range_taps: int | None) -> dict[str, bytes]:
    clear_day(data, DAY, TARIFFS, engine=engine, range_taps=range_taps)
    day_dir = data / "legs" / f"day={DAY.isoformat()}"
    files = {p.name: p.read_bytes()
             for p in (day_dir / "legs.parquet", day_dir / "signals.parquet")}
    files.update({p.name: p.read_bytes() for p in sorted((data / "denylist").glob("*.csv"))})
    return files


def test_clear_day_is_the_same_for_any_range(tmp_path: Path, engine: Engine) -> None:
    """An ingested generated day cleared again and again: the same files for every range."""
    data = tmp_path / "data"
    day = generate(DAY, 5000, 11, TARIFFS, price=match_and_price_fast)
    for path in write_day(tmp_path / "batches", day.table, DAY):
        ingest_file(engine, data, path, TARIFFS.registry)
    default = _cleared(data, engine, None)
    assert pq.read_metadata(pa.BufferReader(default["legs.parquet"])).num_rows > 1000
    for range_taps in (1, 37, 1000):
        assert _cleared(data, engine, range_taps) == default


def test_signals_from_the_narrow_legs_are_the_signals_of_the_whole_legs() -> None:
    """``clear_day`` hands the signals ``SIGNAL_LEG_COLUMNS`` only: a day with DEBIT_MISMATCH
    signals (stale devices injected by the generator) gives the same signals either way."""
    taps = _day_taps(11, 60_000)
    legs, records = match_and_price_sorted(taps, TARIFFS)
    whole = day_signals(DAY, taps, legs, records=records)
    narrow = day_signals(DAY, taps, legs.select(list(SIGNAL_LEG_COLUMNS)), records=records)
    assert "DEBIT_MISMATCH" in whole.column("kind").to_pylist()
    assert narrow.equals(whole)
