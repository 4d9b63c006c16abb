"""The partitioned clear's parts (clearing.partition): cards stay whole, batch files are split
into card buckets once and by content, withdrawn batches are never read, a run is committed
whole or not at all, storage can be an fsspec URL, and dask is an optional extra.

The identity with the single-process run on generated days is tests/test_scaleout_identity.py.
Here the cluster is in-process (3 worker threads): quick to start, and another worker count.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import sys
from collections.abc import Iterator
from pathlib import Path

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine

from clearing import partition
from clearing.day import clear_day, read_day_legs
from clearing.errors import StateError, TongkaError
from clearing.fast import match_and_price_fast
from clearing.ingest import ingest_taps
from clearing.legs_store import PARTS_KEY, legs_metadata
from clearing.partition import (
    BATCH_ROW,
    BUCKETS,
    card_buckets,
    card_partitions,
    cards_dir,
    local_client,
    partition_buckets,
    split_batch,
    split_by_card,
    split_relpath,
)
from clearing.taps import TAP_COLUMNS
from clearing.tapstore import read_day_taps
from clearing.withdraw import withdraw_batch
from settlement.partials import SETTLEMENT_SUMS, day_partials, read_day_partials
from tariffs.load import load_tariff_set
from tongka.testing.generate import generate

DAY = dt.date(2026, 11, 24)
TARIFFS = load_tariff_set()


@pytest.fixture(scope="module")
def day_taps() -> pa.Table:
    g = generate(DAY, 6000, 3, TARIFFS, price=match_and_price_fast)
    return g.table.filter(g.accepted_mask)


@pytest.fixture(scope="module")
def client() -> Iterator[object]:
    with local_client(3, processes=False) as c:
        yield c


def _store(engine: Engine | None, home: Path, taps: pa.Table, pieces: int) -> list[int]:
    """Ingest ``taps`` as ``pieces`` batches (by operator, round robin); their batch ids."""
    assert engine is not None
    ops = sorted(set(taps.column("operator").to_pylist()))
    ids = []
    for k in range(pieces):
        mine = [op for i, op in enumerate(ops) if i % pieces == k]
        part = taps.filter(pa.compute.is_in(taps.column("operator"), pa.array(mine, pa.uint16())))
        sha = hashlib.sha256(f"{k}:{mine}".encode()).hexdigest()
        ids.append(ingest_taps(engine, home, part, [], file_sha256=sha, source_format="canonical",
                               source_name=f"b{k}.parquet", service_day=DAY, operator=101,
                               tariffs=TARIFFS).batch_id)
    return ids


def _splits(home: Path) -> dict[str, int]:
    """The day's split files and their inode numbers (a rewrite makes a new inode)."""
    return {p.name: p.stat().st_ino for p in (home / cards_dir(DAY)).glob("*.parquet")}


# --------------------------------------------------------------------------- cards


@settings(max_examples=50, deadline=None)
@given(n=st.integers(1, 9))
def test_a_card_lives_in_exactly_one_partition(day_taps: pa.Table, n: int) -> None:
    parts = split_by_card(day_taps, n)
    assert sum(p.num_rows for p in parts) == day_taps.num_rows
    owner: dict[tuple[int, int], int] = {}
    for i, p in enumerate(parts):
        for card in set(
            zip(p.column("issuer").to_pylist(), p.column("card_id").to_pylist(), strict=True)
        ):
            assert owner.setdefault(card, i) == i


def test_partitions_are_stable_and_in_range() -> None:
    cards = np.arange(1000, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    issuers = np.full(1000, 1, dtype=np.uint16)
    a = card_partitions(cards, issuers, 4)
    assert a.min() >= 0 and a.max() < 4
    assert np.array_equal(a, card_partitions(cards, issuers, 4))
    assert len(set(a.tolist())) == 4


@pytest.mark.parametrize("n", [1, 2, 3, 7, 63, 64])
def test_the_partitions_share_out_every_bucket_once(n: int) -> None:
    owned = [b for p in range(n) for b in partition_buckets(p, n)]
    assert sorted(owned) == list(range(BUCKETS))


# --------------------------------------------------------------------------- split


def test_a_batch_file_is_split_into_whole_cards_once(tmp_path: Path, day_taps: pa.Table) -> None:
    rel = "taps/day=2026-11-24/operator=101/abc.parquet"
    (tmp_path / rel).parent.mkdir(parents=True)
    pq.write_table(day_taps, tmp_path / rel, row_group_size=1000)
    n = day_taps.num_rows
    split = split_batch(str(tmp_path), DAY, rel, 7, 0, n, n)
    assert split.written and split.key.startswith("000007-abc-")
    assert sum(split.group_rows) == sum(split.rows.values()) == n
    stored = pq.ParquetFile(tmp_path / split_relpath(DAY, split.key))
    assert stored.metadata.num_row_groups == len(split.groups)
    got = stored.read()
    rows = np.asarray(got.column(BATCH_ROW).to_numpy())
    assert sorted(rows.tolist()) == list(range(n))  # every tap once
    assert got.select(list(TAP_COLUMNS)).equals(
        day_taps.select(list(TAP_COLUMNS)).take(pa.array(rows)))  # each row is its tap
    buckets = card_buckets(got.column("card_id").to_numpy(), got.column("issuer").to_numpy())
    starts = np.cumsum([0, *split.group_rows])
    for g, (b, lo, hi) in enumerate(zip(split.groups, starts, starts[1:], strict=False)):
        assert set(buckets[lo:hi].tolist()) == {b}  # a row group is one bucket
        assert np.all(np.diff(rows[lo:hi]) > 0)  # in file order
        assert stored.metadata.row_group(g).num_rows == hi - lo
    for b in split.rows:  # a bucket's row groups, read alone, are its taps in file order
        mine = stored.read_row_groups(split.row_groups([b]))
        assert mine.column(BATCH_ROW).to_pylist() == sorted(rows[buckets == b].tolist())
    before = _splits(tmp_path)
    again = split_batch(str(tmp_path), DAY, rel, 7, 0, n, n)
    assert (again.written, again.key, again.groups, again.group_rows) == (
        False, split.key, split.groups, split.group_rows)
    assert _splits(tmp_path) == before  # not written again
    # pieces of the file (not on row group bounds) split to the same taps, in file order
    cut = 2345
    halves = [split_batch(str(tmp_path), DAY, rel, 7, lo, hi, n) for lo, hi in ((0, cut),
                                                                               (cut, n))]
    pieces = [pq.read_table(tmp_path / split_relpath(DAY, h.key)) for h in halves]
    assert [sorted(p.column(BATCH_ROW).to_pylist()) for p in pieces] == [
        list(range(cut)), list(range(cut, n))]
    for b in split.rows:
        both = [p.filter(pa.array(card_buckets(p.column("card_id").to_numpy(),
                                               p.column("issuer").to_numpy()) == b))
                for p in pieces]
        assert pa.concat_tables(both).column(BATCH_ROW).to_pylist() == sorted(
            rows[buckets == b].tolist())
    # another content under the same name is another split (never the stale one)
    pq.write_table(day_taps.slice(0, 100), tmp_path / rel)
    other = split_batch(str(tmp_path), DAY, rel, 7, 0, 100, 100)
    assert other.written and other.key != split.key and sum(other.group_rows) == 100
    with pytest.raises(StateError) as caught:  # a count that disagrees is never half a day
        split_batch(str(tmp_path), DAY, rel, 7, 0, 100, 101)
    assert caught.value.code == "STATE_CONFLICT"


def test_a_batch_file_the_workers_cannot_see_is_a_coded_error(tmp_path: Path) -> None:
    with pytest.raises(StateError) as caught:
        split_batch(f"file://{tmp_path}", DAY, "taps/day=2026-11-24/operator=101/x.parquet", 1,
                    0, 10, 10)
    assert caught.value.code == "TAPSTORE_MISSING"


# --------------------------------------------------------------------------- the clear


def test_a_late_batch_is_split_alone_and_a_withdrawn_one_is_never_read(
    engine: Engine, tmp_path: Path, day_taps: pa.Table, client: object
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    ops = sorted(set(day_taps.column("operator").to_pylist()))
    late_ops = pa.array(ops[-2:], pa.uint16())
    early = day_taps.filter(pa.compute.invert(pa.compute.is_in(day_taps.column("operator"),
                                                               late_ops)))
    ids = _store(engine, home, early, 3)
    clear_day(home, DAY, TARIFFS, engine=engine, partitions=4, client=client,
              summary=SETTLEMENT_SUMS)
    first = _splits(home)
    assert len(first) == 3
    _store(engine, home, day_taps.filter(pa.compute.is_in(day_taps.column("operator"),
                                                          late_ops)), 1)
    scaled = clear_day(home, DAY, TARIFFS, engine=engine, partitions=4, client=client,
                       summary=SETTLEMENT_SUMS)
    second = _splits(home)
    assert len(second) == 4 and {k: second[k] for k in first} == first  # only the late one
    assert scaled.taps == read_day_taps(home, DAY, engine).num_rows == day_taps.num_rows

    withdraw_batch(engine, home, ids[1], reason="sent by mistake")
    scaled = clear_day(home, DAY, TARIFFS, engine=engine, partitions=3, client=client,
                       summary=SETTLEMENT_SUMS)
    taps = read_day_taps(home, DAY, engine)
    assert scaled.taps == taps.num_rows < day_taps.num_rows
    assert len(_splits(home)) == 3  # the withdrawn batch's split is removed
    legs = read_day_legs(home, DAY)
    assert legs.equals(match_and_price_fast(taps, TARIFFS))
    assert read_day_partials(home, DAY) == day_partials(legs, DAY)


def test_a_large_batch_is_split_in_pieces(engine: Engine, tmp_path: Path, day_taps: pa.Table,
                                          client: object, monkeypatch: pytest.MonkeyPatch
                                          ) -> None:
    home = tmp_path / "home"
    home.mkdir()
    _store(engine, home, day_taps, 2)
    monkeypatch.setattr(partition, "PIECE_ROWS", 700)  # the workers are threads of this process
    scaled = clear_day(home, DAY, TARIFFS, engine=engine, partitions=3, client=client,
                       summary=SETTLEMENT_SUMS)
    assert sum(sum(s.group_rows) for s in scaled.splits) == day_taps.num_rows
    per_file: dict[str, list[tuple[int, int]]] = {}
    for s in scaled.splits:
        per_file.setdefault(s.rel, []).append((s.start, s.stop))
    for ranges in per_file.values():  # consecutive pieces of at most 700 taps
        assert ranges[0][0] == 0 and all(b - a <= 700 for a, b in ranges)
        assert all(x[1] == y[0] for x, y in zip(ranges, ranges[1:], strict=False))
    assert sum(len(r) for r in per_file.values()) > len(per_file)
    taps = read_day_taps(home, DAY, engine)
    assert read_day_legs(home, DAY).equals(match_and_price_fast(taps, TARIFFS))


def test_without_a_database_the_files_on_disk_are_cleared(
    engine: Engine, tmp_path: Path, day_taps: pa.Table, client: object
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    _store(engine, home, day_taps, 2)
    scaled = clear_day(home, DAY, TARIFFS, engine=None, partitions=5, client=client)
    assert scaled.taps == day_taps.num_rows
    assert read_day_legs(home, DAY).equals(
        match_and_price_fast(read_day_taps(home, DAY), TARIFFS))
    assert read_day_partials(home, DAY) is None  # cleared without settlement's sums


def test_storage_on_an_fsspec_url(engine: Engine, tmp_path: Path, day_taps: pa.Table,
                                  client: object) -> None:
    """The workers read and write through fsspec's local filesystem, by URL."""
    home = tmp_path / "home"
    home.mkdir()
    _store(engine, home, day_taps, 2)
    url = f"file://{home}"
    assert fsspec.filesystem("file").exists(f"{home}/taps")
    scaled = clear_day(home, DAY, TARIFFS, engine=engine, partitions=2, client=client,
                       storage=url, summary=SETTLEMENT_SUMS)
    assert b'"storage": "file://' in legs_metadata(home, DAY)[PARTS_KEY]
    assert all(fsspec.filesystem("file").exists(f"{home}/{p.path}") for p in scaled.parts)
    legs = read_day_legs(home, DAY)
    assert legs.equals(match_and_price_fast(read_day_taps(home, DAY, engine), TARIFFS))


class _Broken:
    """A summary that fails in every partition task: the run must not be committed."""

    key = b"tongka.test_broken"

    def of(self, legs: pa.Table, day: dt.date) -> None:
        raise RuntimeError("a partition failed")

    def merge(self, parts: object, day: dt.date) -> None:  # pragma: no cover - never reached
        return None

    def dumps(self, merged: object) -> bytes:  # pragma: no cover - never reached
        return b""


def test_a_failed_run_leaves_the_committed_legs(engine: Engine, tmp_path: Path,
                                               day_taps: pa.Table, client: object) -> None:
    home = tmp_path / "home"
    home.mkdir()
    _store(engine, home, day_taps, 2)
    clear_day(home, DAY, TARIFFS, engine=engine, partitions=2, client=client,
              summary=SETTLEMENT_SUMS)
    committed = legs_metadata(home, DAY)
    before = read_day_legs(home, DAY)
    with pytest.raises(RuntimeError, match="a partition failed"):
        clear_day(home, DAY, TARIFFS, engine=engine, partitions=3, client=client,
                  summary=_Broken())
    assert legs_metadata(home, DAY) == committed
    assert read_day_legs(home, DAY).equals(before)
    runs = list((home / "legs" / f"day={DAY}").glob("run=*"))
    assert len(runs) == 2  # the committed run and the failed one's leftovers
    clear_day(home, DAY, TARIFFS, engine=engine, partitions=3, client=client,
              summary=SETTLEMENT_SUMS)
    assert len(list((home / "legs" / f"day={DAY}").glob("run=*"))) == 1
    for rel in (p for p in (home / "legs" / f"day={DAY}").rglob("part-*.parquet")):
        rel.unlink()
    with pytest.raises(StateError) as gone:
        read_day_legs(home, DAY)
    assert gone.value.code == "STATE_CONFLICT"


def test_without_dask_partitions_are_a_coded_error(monkeypatch: pytest.MonkeyPatch,
                                                   tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "dask.distributed", None)  # import fails as if missing
    with pytest.raises(TongkaError) as caught:
        clear_day(tmp_path, DAY, TARIFFS, partitions=2)
    assert (caught.value.code, caught.value.exit_code) == ("SCALE_NOT_INSTALLED", 2)
    assert "pip install 'tongka[scale]'" in str(caught.value)
