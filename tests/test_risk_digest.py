"""The per-day card-key digest of CARD_SEQ_REPLAY's lookback (``clearing.risk_digest``): the
signals with digests are the signals of streaming every stored key, whatever the hash does
(hashes cut to a few bits, so false hits abound), a digest no longer describing its day's
stored taps (late or withdrawn batch, file gone) is never trusted, and days without one (never
cleared, cleared before digests existed) are streamed."""

from __future__ import annotations

import datetime as dt
from functools import cache
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine
from test_risk_store import DAY, ingest_all, planted, write_batches

from clearing import risk_digest, tapstore
from clearing.day import clear_day
from clearing.fast import match_and_price_fast, tap_chunks
from clearing.legs import LEG_SCHEMA
from clearing.legs_store import REVISION_KEY, legs_path, legs_revision
from clearing.parquet_io import write_atomic
from clearing.risk import RiskKind, day_signals
from clearing.risk_digest import (
    DayHashes,
    DayProbe,
    EarlierDigest,
    HashBuffer,
    day_filter,
    merge_equal,
    probe_equal,
    sort_hashes,
)
from clearing.risk_store import earlier_keys, read_day_signals, write_day_signals
from clearing.sorting import sort_tap_records
from clearing.tapstore import read_day_taps
from clearing.withdraw import withdraw_batch
from tariffs.load import load_tariff_set
from tongka.testing.generate import generate

T = load_tariff_set()
REPLAY = RiskKind.CARD_SEQ_REPLAY.name


# ---------------------------------------------------------------------------------------------
# The kernels against plain numpy


@settings(max_examples=60, deadline=None)
@given(n=st.integers(0, 3000), bits=st.sampled_from([1, 3, 8, 20, 64]), seed=st.integers(0, 99))
def test_sort_hashes_orders_by_hash_then_row(n: int, bits: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    h = rng.integers(0, 2**64 - 1, n, dtype=np.uint64) & risk_digest._mask(bits)
    rows = rng.permutation(n).astype(np.uint32)
    got_h, got_r = sort_hashes(h.copy(), rows.copy())
    by = np.lexsort((rows, h))
    assert np.array_equal(got_h, h[by]) and np.array_equal(got_r, rows[by])


@settings(max_examples=60, deadline=None)
@given(na=st.integers(0, 400), nb=st.integers(0, 400), bits=st.sampled_from([1, 2, 5, 64]),
       seed=st.integers(0, 99))
def test_merge_equal_finds_every_equal_pair(na: int, nb: int, bits: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    mask = risk_digest._mask(bits)
    a = np.sort(rng.integers(0, 2**64 - 1, na, dtype=np.uint64) & mask)
    b = np.sort(rng.integers(0, 2**64 - 1, nb, dtype=np.uint64) & mask)
    if na and nb and bits == 64:  # plant a few equal hashes, runs included
        b[: min(3, nb)] = a[0]
        b = np.sort(b)
    i, j = merge_equal(a, b)
    want = {(p, q) for p in range(na) for q in range(nb) if a[p] == b[q]}
    assert set(zip(i.tolist(), j.tolist(), strict=True)) == want and len(i) == len(want)


def equal_pairs(a: np.ndarray, b: np.ndarray) -> set[tuple[int, int]]:
    """The plain twin: every (i, j) with a[i] == b[j], from the values both hold."""
    return {(i, j) for v in np.intersect1d(a, b)
            for i in np.flatnonzero(a == v).tolist() for j in np.flatnonzero(b == v).tolist()}


def some_hashes(rng: np.random.Generator, n: int, pool: np.ndarray, share: float,
                mask: np.uint64) -> np.ndarray:
    """``n`` sorted hashes cut to ``mask``: a ``share`` of them drawn from ``pool`` (equal
    hashes on both sides, and runs of one hash), the others fresh."""
    fresh = rng.integers(0, 2**64 - 1, n, dtype=np.uint64, endpoint=True)
    if len(pool):
        fresh = np.where(rng.random(n) < share, rng.choice(pool, n), fresh)
    return np.sort(fresh & mask)


@settings(max_examples=150, deadline=None)
@given(na=st.integers(0, 600), nb=st.integers(0, 600), pool=st.integers(0, 40),
       share=st.sampled_from([0.0, 0.05, 0.5]), bits=st.sampled_from([1, 2, 5, 13, 24, 64]),
       wbits=st.integers(1, 14), coarser=st.integers(0, 13), seed=st.integers(0, 2**32 - 1),
       mapped=st.booleans())
def test_probe_finds_the_pairs_of_the_merge(na: int, nb: int, pool: int, share: float,
                                            bits: int, wbits: int, coarser: int, seed: int,
                                            mapped: bool) -> None:
    """The filter probe gives the merge's pairs, and the plain twin's, whatever the filter's
    size against the day's (a filter far larger than the day, as at ten million taps,
    rejects nearly everything; hashes cut short pass nearly everything), with equal hashes
    in runs on either side, against a read-only array as a digest's memory map is."""
    rng = np.random.default_rng(seed)
    mask = risk_digest._mask(bits)
    common = rng.integers(0, 2**64 - 1, pool, dtype=np.uint64, endpoint=True)
    a = some_hashes(rng, na, common, share, mask)
    b = some_hashes(rng, nb, common, share, mask)
    if mapped:
        b.setflags(write=False)
    sbits = max(1, wbits - coarser)
    i, j = probe_equal(a, *day_filter(a, wbits, sbits), wbits, sbits, b)
    got = list(zip(i.tolist(), j.tolist(), strict=True))
    mi, mj = merge_equal(a, b)
    want = equal_pairs(a, b)
    assert set(got) == want == set(zip(mi.tolist(), mj.tolist(), strict=True))
    assert len(got) == len(want) == len(mi)  # each pair once
    assert got == sorted(got, key=lambda p: (p[1], p[0]))  # in order of j, then i
    probe = DayProbe.of(a)  # the size a clear picks for a day of na hashes
    pi, pj = probe.pairs(b)
    assert set(zip(pi.tolist(), pj.tolist(), strict=True)) == want and len(pi) == len(want)


def test_probe_reads_a_stored_digest_through_its_memory_map(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    a = np.sort(rng.integers(0, 2**64 - 1, 50_000, dtype=np.uint64))
    b = rng.integers(0, 2**64 - 1, 60_000, dtype=np.uint64)
    b[rng.choice(len(b), 300, replace=False)] = rng.choice(a, 300)
    b[:5] = a[10]  # a run of one hash in the digest, equal to one of the day's
    np.save(tmp_path / "keys.npy", np.sort(b))
    stored = np.load(tmp_path / "keys.npy", mmap_mode="r")
    i, j = DayProbe.of(a).pairs(stored)
    assert set(zip(i.tolist(), j.tolist(), strict=True)) == equal_pairs(a, np.asarray(stored))
    assert len(i) >= 300


def test_day_filter_passes_every_day_hash_and_few_others() -> None:
    """No false negative (each day hash finds its own bits set), and the point of the filter:
    at the size a clear picks, well under 1 % of unrelated 64-bit hashes get through."""
    rng = np.random.default_rng(3)
    a = np.sort(rng.integers(0, 2**64 - 1, 200_000, dtype=np.uint64))
    probe = DayProbe.of(a)
    assert len(probe.words) * risk_digest.FILTER_HASHES_PER_WORD >= len(a)

    def passes(x: np.ndarray) -> np.ndarray:
        below = 64 - probe.wbits - 6
        m = np.zeros(len(x), np.uint64)
        for k in range(risk_digest.FILTER_BITS):
            m |= np.uint64(1) << ((x >> np.uint64(below - 6 * k)) & np.uint64(63))
        word = probe.words[(x >> np.uint64(64 - probe.wbits)).astype(np.int64)]
        return np.asarray((word & m) == m)

    assert passes(a).all()
    other = rng.integers(0, 2**64 - 1, 200_000, dtype=np.uint64)
    assert passes(other).mean() < 0.01
    starts = probe.start.astype(np.int64)
    groups = (a >> np.uint64(64 - probe.sbits)).astype(np.int64)
    assert np.array_equal(starts[groups], np.searchsorted(groups, groups))  # bucket starts
    assert starts[-1] == len(a) and np.all(np.diff(starts) >= 0)


def test_hash_buffer_builds_the_day_probe_once() -> None:
    rng = np.random.default_rng(5)
    day = DayHashes(np.sort(rng.integers(0, 2**64 - 1, 1000, dtype=np.uint64)),
                    rng.permutation(1000).astype(np.uint32), 64)
    other = DayHashes(day.hashes.copy(), day.rows, 64)
    buffer = HashBuffer()
    first = buffer.probe(day)
    assert buffer.probe(day) is first  # reused for every earlier day of the clear
    assert buffer.probe(other) is not first and buffer.probe(other).hashes is other.hashes


def test_hashes_from_records_and_from_columns_agree() -> None:
    taps = base_day()
    records = sort_tap_records(tap_chunks(taps))
    a = DayHashes.of(records=records)
    b = DayHashes.of(keys={c: taps.column(c).to_numpy() for c in tapstore.CARD_KEY})
    assert np.array_equal(a.hashes, b.hashes) and np.array_equal(a.rows, b.rows)


# ---------------------------------------------------------------------------------------------
# Signals with digests = signals streaming every stored key


@cache
def base_day(n: int = 700) -> pa.Table:
    g = generate(DAY, n, 11, T, price=match_and_price_fast)
    return g.table.filter(g.accepted_mask)


def earlier_day(taps: pa.Table, back: int, replayed: np.ndarray) -> pa.Table:
    """An earlier day of the same cards: ``replayed`` rows keep their card key (a replay into
    DAY), the others' counters are moved on; device sequences differ (distinct evidence)."""
    seq = np.asarray(taps.column("card_seq").to_numpy()).astype(np.int64)
    seq = np.where(replayed, seq, seq + 1_000_000 + 1000 * back).astype(np.int32)
    dev = np.asarray(taps.column("device_seq").to_numpy()) + 10_000 * back
    ts = np.asarray(taps.column("ts_ms").to_numpy()) - back * 86_400_000
    for name, col in (("card_seq", pa.array(seq, pa.int32())),
                      ("device_seq", pa.array(dev, taps.schema.field("device_seq").type)),
                      ("ts_ms", pa.array(ts, pa.int64()))):
        taps = taps.set_column(taps.column_names.index(name), name, col)
    return taps


def store_day(root: Path, day: dt.date, taps: pa.Table, files: int) -> None:
    """The day's taps as ``files`` stored batch files (no database: read from disk)."""
    cuts = np.linspace(0, taps.num_rows, files + 1).astype(int)
    for k in range(files):
        rel = tapstore.batch_relpath(day, 1, f"{k:064d}")
        tapstore.write_batch_taps(root, rel, taps.slice(cuts[k], cuts[k + 1] - cuts[k]),
                                  {tapstore.META_DAY_SEQ: str(k + 1).encode()})


def clear_signals_only(root: Path, day: dt.date, revision: int = 0) -> None:
    """What clear_day leaves for the lookback (legs at a revision, then the signals and the
    digest), without pricing: the legs carry no rows here."""
    legs = LEG_SCHEMA.empty_table().replace_schema_metadata({REVISION_KEY: str(revision).encode()})
    write_atomic(legs, legs_path(root, day))
    write_day_signals(root, day, read_day_taps(root, day, optional=True), legs)


def both_ways(root: Path, taps: pa.Table, records: bool) -> tuple[pa.Table, pa.Table, int]:
    """DAY's signals streaming every stored key, and with digests; and how many digests."""
    given = {"records": sort_tap_records(tap_chunks(taps))} if records else {}
    chunks = list(earlier_keys(root, DAY, digests=True))
    streamed = day_signals(DAY, taps, None, earlier=earlier_keys(root, DAY), **given)
    digested = day_signals(DAY, taps, None, earlier=chunks, **given)
    return streamed, digested, sum(isinstance(c, EarlierDigest) for c in chunks)


@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data(), bits=st.sampled_from([3, 10, 64]), records=st.booleans())
def test_signals_with_digests_equal_streaming(tmp_path_factory: pytest.TempPathFactory,
                                              monkeypatch: pytest.MonkeyPatch,
                                              data: st.DataObject, bits: int,
                                              records: bool) -> None:
    monkeypatch.setattr(risk_digest, "HASH_BITS", bits)  # few bits: false hits everywhere
    root = tmp_path_factory.mktemp("digest")
    taps = base_day()
    n = taps.num_rows
    backs = data.draw(st.lists(st.integers(2, 31), min_size=1, max_size=4, unique=True))
    for back in backs:
        when = DAY - dt.timedelta(days=back)
        share = data.draw(st.sampled_from([0.0, 0.01, 0.2]))
        rng = np.random.default_rng(back)
        day_taps = earlier_day(taps, back, rng.random(n) < share)
        if data.draw(st.booleans()):  # the same keys twice on one day (two evidence taps)
            day_taps = pa.concat_tables([day_taps, earlier_day(taps, back + 40,
                                                               rng.random(n) < share)])
        store_day(root, when, day_taps, data.draw(st.integers(1, 3)))
        if data.draw(st.booleans()):  # cleared (a digest), or never cleared (streamed)
            clear_signals_only(root, when)
    streamed, digested, digests = both_ways(root, taps, records)
    assert digested.equals(streamed)
    assert digests == sum((root / "legs" / f"day={(DAY - dt.timedelta(days=b)).isoformat()}"
                           ).is_dir() and b <= 30 for b in backs)


def test_false_hash_hits_never_signal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Hashes cut to 4 bits: nearly every stored key's hash is one of the day's, and no key
    is: the exact keys decide, so there is no replay."""
    monkeypatch.setattr(risk_digest, "HASH_BITS", 4)
    taps = base_day()
    when = DAY - dt.timedelta(days=5)
    store_day(tmp_path, when, earlier_day(taps, 5, np.zeros(taps.num_rows, bool)), 2)
    clear_signals_only(tmp_path, when)
    (digest,) = list(earlier_keys(tmp_path, DAY, digests=True))
    assert isinstance(digest, EarlierDigest)
    assert len(merge_equal(DayHashes.of(keys={c: taps.column(c).to_numpy()
                                              for c in tapstore.CARD_KEY}).hashes,
                           np.asarray(digest.hashes))[0]) > taps.num_rows  # false hits
    streamed, digested, _ = both_ways(tmp_path, taps, records=True)
    assert digested.equals(streamed)
    assert REPLAY not in set(digested.column("kind").to_pylist())


def test_true_replays_are_found_through_the_digest(tmp_path: Path) -> None:
    taps = base_day()
    when = DAY - dt.timedelta(days=9)
    replayed = np.zeros(taps.num_rows, bool)
    replayed[::50] = True
    store_day(tmp_path, when, earlier_day(taps, 9, replayed), 3)
    clear_signals_only(tmp_path, when)
    streamed, digested, digests = both_ways(tmp_path, taps, records=False)
    assert digests == 1 and digested.equals(streamed)
    assert digested.column("kind").to_pylist().count(REPLAY) == int(replayed.sum())


# ---------------------------------------------------------------------------------------------
# When a digest is not trusted


def one_cleared_earlier_day(root: Path) -> tuple[pa.Table, dt.date]:
    taps = base_day()
    when = DAY - dt.timedelta(days=4)
    replayed = np.zeros(taps.num_rows, bool)
    replayed[::70] = True
    store_day(root, when, earlier_day(taps, 4, replayed), 2)
    clear_signals_only(root, when, revision=3)
    return taps, when


def kinds_of_chunks(root: Path) -> set[type]:
    return {type(c) for c in earlier_keys(root, DAY, digests=True)}


def test_missing_or_broken_digest_falls_back_to_the_stored_keys(tmp_path: Path) -> None:
    taps, when = one_cleared_earlier_day(tmp_path)
    assert kinds_of_chunks(tmp_path) == {EarlierDigest}
    want, _, _ = both_ways(tmp_path, taps, records=True)
    meta = risk_digest.read_meta(tmp_path, when)
    assert meta is not None
    folder = risk_digest.digest_dir(tmp_path, when)
    (folder / f"rows-{meta['token']}.npy").unlink()  # an array gone: not trusted
    assert EarlierDigest not in kinds_of_chunks(tmp_path)
    risk_digest.remove_digest(tmp_path, when)  # a day cleared before digests existed
    assert not list(folder.glob("*.npy")) and EarlierDigest not in kinds_of_chunks(tmp_path)
    streamed, digested, digests = both_ways(tmp_path, taps, records=True)
    assert digests == 0 and digested.equals(want) and streamed.equals(want)


def test_digest_of_other_files_revision_or_width_is_not_trusted(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    taps, when = one_cleared_earlier_day(tmp_path)
    want, _, _ = both_ways(tmp_path, taps, records=False)
    meta = risk_digest.read_meta(tmp_path, when)
    assert meta is not None and legs_revision(tmp_path, when) == 3
    # the legs at another revision (cleared again, digest not rewritten): not trusted
    write_atomic(LEG_SCHEMA.empty_table().replace_schema_metadata({REVISION_KEY: b"4"}),
                 legs_path(tmp_path, when))
    assert EarlierDigest not in kinds_of_chunks(tmp_path)
    clear_signals_only(tmp_path, when, revision=4)
    assert kinds_of_chunks(tmp_path) == {EarlierDigest}
    monkeypatch.setattr(risk_digest, "HASH_BITS", 32)  # hashes of another width
    assert EarlierDigest not in kinds_of_chunks(tmp_path)
    monkeypatch.undo()
    # a late file of the day (stored, the day not cleared again): not trusted, streamed
    extra = earlier_day(taps, 4, np.arange(taps.num_rows) % 3 == 0).slice(0, 100)
    rel = tapstore.batch_relpath(when, 2, "f" * 64)
    tapstore.write_batch_taps(tmp_path, rel, extra, {tapstore.META_DAY_SEQ: b"9"})
    assert EarlierDigest not in kinds_of_chunks(tmp_path)
    streamed, digested, _ = both_ways(tmp_path, taps, records=True)
    assert digested.equals(streamed) and not digested.equals(want)  # the late replays count
    clear_signals_only(tmp_path, when, revision=5)  # cleared again: a new digest, trusted
    assert kinds_of_chunks(tmp_path) == {EarlierDigest}
    again, _, _ = both_ways(tmp_path, taps, records=True)
    assert again.equals(streamed)
    assert len(list(risk_digest.digest_dir(tmp_path, when).glob("keys-*.npy"))) == 1


# ---------------------------------------------------------------------------------------------
# Through clear_day, with a database: late and withdrawn batches


def test_late_and_withdrawn_batches_through_clear_day(engine: Engine, tmp_path: Path) -> None:
    p = planted(n=3000)
    when = p.earlier_day
    early = write_batches(tmp_path / "early", p.earlier, when)
    assert len(early) >= 2
    ingest_all(engine, tmp_path, early[:1])
    clear_day(tmp_path, when, T, engine=engine)
    ingest_all(engine, tmp_path, write_batches(tmp_path / "in", p.taps, DAY))
    taps = read_day_taps(tmp_path, DAY, engine, optional=True)

    def compare() -> tuple[pa.Table, int]:
        chunks = list(earlier_keys(tmp_path, DAY, engine, digests=True))
        streamed = day_signals(DAY, taps, None, earlier=earlier_keys(tmp_path, DAY, engine))
        digested = day_signals(DAY, taps, None, earlier=chunks)
        assert digested.equals(streamed)
        return digested, sum(isinstance(c, EarlierDigest) for c in chunks)

    first, digests = compare()
    assert digests == 1
    ingest_all(engine, tmp_path, early[1:])  # late batches of the earlier day: digest stale
    late, digests = compare()
    assert digests == 0 and late.num_rows > first.num_rows
    clear_day(tmp_path, when, T, engine=engine)  # cleared again: the digest is rewritten
    again, digests = compare()
    assert digests == 1 and again.equals(late)
    withdraw_batch(engine, tmp_path, early_batch_id(engine, when), reason="test: withdrawn")
    gone, digests = compare()
    assert digests == 0
    clear_day(tmp_path, when, T, engine=engine)
    cleared, digests = compare()
    assert digests == 1 and cleared.equals(gone)
    clear_day(tmp_path, DAY, T, engine=engine)  # the whole clear, reading the digest
    stored = read_day_signals(tmp_path, DAY)
    assert stored is not None and stored.filter(
        pc.equal(stored.column("kind"), REPLAY)).equals(
        gone.filter(pc.equal(gone.column("kind"), REPLAY)))
    assert risk_digest.read_meta(tmp_path, DAY) is not None  # DAY's own digest, for later


def early_batch_id(engine: Engine, day: dt.date) -> int:
    from sqlalchemy import select

    from clearing.batches import Batch, BatchStatus
    from clearing.db import session_factory

    with session_factory(engine)() as session:
        return int(session.scalars(select(Batch.id).where(
            Batch.service_day == day, Batch.status != BatchStatus.WITHDRAWN,
            Batch.tap_path.is_not(None)).order_by(Batch.day_seq)).first() or 0)


def test_clear_day_writes_a_digest_tied_to_its_files(tmp_path: Path) -> None:
    taps = base_day()
    store_day(tmp_path, DAY, taps, 2)
    clear_day(tmp_path, DAY, T)
    meta = risk_digest.read_meta(tmp_path, DAY)
    assert meta is not None and meta["taps"] == taps.num_rows
    assert [f[0] for f in meta["files"]] == [
        f.relative_to(tmp_path).as_posix() for f in tapstore.day_files_on_disk(tmp_path, DAY)]
    assert meta["revision"] == legs_revision(tmp_path, DAY)
    digest = risk_digest.trusted(tmp_path, DAY, [f[0] for f in meta["files"]],
                                 legs_revision(tmp_path, DAY))
    assert digest is not None
    # every stored row is where the digest says: its hash is its key's
    rows = np.asarray(digest.rows).astype(np.int64)
    got = digest.stored_rows(rows)
    again = DayHashes.of(keys=got)
    assert np.array_equal(np.sort(again.hashes), np.asarray(digest.hashes))
    assert sorted(rows.tolist()) == list(range(taps.num_rows))
    assert pq.read_metadata(legs_path(tmp_path, DAY)).num_rows > 0


# ---------------------------------------------------------------------------------------------
# The partitioned clear streams its buckets of the earlier days: the same signals


def test_partitioned_clear_equals_a_single_process_reading_digests(engine: Engine,
                                                                   tmp_path: Path) -> None:
    """The earlier day cleared in one process (so it has a digest), then DAY cleared in one
    process (its lookback through the digest) and on partitions (their buckets of the
    earlier day's splits, streamed): the same signals and deny list."""
    from clearing.partition import local_client

    p = planted(n=3000)
    ingest_all(engine, tmp_path, write_batches(tmp_path / "early", p.earlier, p.earlier_day))
    clear_day(tmp_path, p.earlier_day, T, engine=engine)
    ingest_all(engine, tmp_path, write_batches(tmp_path / "in", p.taps, DAY))
    chunks = list(earlier_keys(tmp_path, DAY, engine, digests=True))
    assert [type(c) for c in chunks] == [EarlierDigest]
    clear_day(tmp_path, DAY, T, engine=engine)
    single = read_day_signals(tmp_path, DAY)
    assert single is not None and REPLAY in set(single.column("kind").to_pylist())
    with local_client(2, processes=False) as client:
        clear_day(tmp_path, DAY, T, engine=engine, partitions=3, client=client)
    scaled = read_day_signals(tmp_path, DAY)
    assert scaled is not None and scaled.equals(single)
