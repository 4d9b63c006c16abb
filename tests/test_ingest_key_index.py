"""The key index of one ingestion call (``clearing.tapstore.KeyIndex``) gives exactly the
de-duplication of the streaming path (SPEC §4), on SQLite and PostgreSQL, whatever else
commits or withdraws between the call's batches: another process's batches, withdrawals,
batches of the neighbouring days and of days two apart."""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine

from clearing.db import make_engine, session_factory
from clearing.ingest import BatchReport, ingest_taps
from clearing.service_day import local_ms
from clearing.taps import TAP_SCHEMA, TapType, taps_table
from clearing.tapstore import (
    FULL_HASH,
    KEY_COLUMNS,
    MIN_INDEX_KEYS,
    KeyIndex,
    read_day_taps,
)
from clearing.withdraw import withdraw_batch
from tariffs.registry import FLAT, load_registry
from tests.store_support import reset_store
from tongka.schema import upgrade

REG = load_registry()
DAY = dt.date(2026, 11, 24)
COLLIDING = 0x0000_0001_0000_0001  # a hash of two bits: home slots and fingerprints collide
BUS = next(ln for ln in REG.lines.values() if ln.network == FLAT)


def tap(day: dt.date, dev: int, seq: int, card: int, cseq: int, k: int, bad: bool = False
        ) -> dict:
    stop = BUS.stops[k % len(BUS.stops)]
    return dict(operator=BUS.operator, device_id=dev, device_seq=seq, card_id=5000 + card,
                card_seq=cseq, issuer=1, product=9 if bad else 0, media=0,
                ts_ms=local_ms(day, 7) + k, city=REG.stops[stop].city, line=BUS.line, stop=stop,
                tap_type=int(TapType.FLAT), debited_fen=160)


def send(engine: Engine, data_dir: Path, day: dt.date, rows: list[dict], name: str,
         keys: KeyIndex | None) -> BatchReport:
    sha = hashlib.sha256(f"{name}:{day}:{rows}".encode()).hexdigest()
    return ingest_taps(engine, data_dir, taps_table(rows), [], file_sha256=sha,
                       source_format="canonical", source_name=name, service_day=day,
                       operator=BUS.operator, registry=REG, keys=keys)


def outcome(r: BatchReport) -> tuple:
    return r.status, r.received, r.accepted, r.duplicates, r.quarantined



# (device, device seq, card, card seq, rejected): few values, so keys collide often
row = st.tuples(st.integers(0, 2), st.integers(0, 4), st.integers(0, 2), st.integers(0, 4),
                st.sampled_from([False, False, False, True]))
batch = st.tuples(st.just("batch"), st.integers(-1, 2), st.lists(row, min_size=1, max_size=8),
                  st.booleans())  # (kind, day offset, rows, through the call's index)
withdraw = st.tuples(st.just("withdraw"), st.integers(0, 20))


@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(steps=st.lists(st.one_of(batch, batch, batch, withdraw), min_size=1, max_size=10),
       max_keys=st.sampled_from([1 << 20, 1 << 20, 12]),
       hash_mask=st.sampled_from([FULL_HASH, FULL_HASH, COLLIDING]),
       min_keys=st.sampled_from([MIN_INDEX_KEYS, 1]))
def test_the_call_index_dedups_as_streaming_does(engine: Engine, tmp_path: Path,
                                                 steps: list[tuple], max_keys: int,
                                                 hash_mask: int, min_keys: int) -> None:
    """Store A: the call's batches through one KeyIndex, the "other process" ones and the
    withdrawals straight into the same database between them. Store B (SQLite): everything by
    the streaming path. Every report and every day's stored taps must be the same, also when
    the index outgrows its budget midway (``max_keys`` 12) and the call streams from there, and
    when its fingerprints collide all the time (the hash truncated to two bits), and when its
    tables start at one key and are rebuilt bigger from the files as the call goes."""
    ref = make_engine(f"sqlite:///{tmp_path / 'ref.sqlite'}")
    upgrade(ref)
    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    reset_store(engine, a_dir)
    reset_store(ref, b_dir)
    index = KeyIndex(a_dir, max_keys=max_keys, hash_mask=hash_mask, min_keys=min_keys)
    ids: list[tuple[int, int]] = []  # (batch id in A, in B) of each stored batch
    for n, step in enumerate(steps):
        if step[0] == "withdraw":
            if not ids:
                continue
            a_id, b_id = ids.pop(step[1] % len(ids))
            withdraw_batch(engine, a_dir, a_id, reason="test")
            withdraw_batch(ref, b_dir, b_id, reason="test")
            continue
        _, offset, spec, through_index = step
        day = DAY + dt.timedelta(days=offset)
        rows = [tap(day, 1 + d, s, c, cs, k, bad) for k, (d, s, c, cs, bad) in enumerate(spec)]
        ra = send(engine, a_dir, day, rows, f"b{n}", index if through_index else None)
        rb = send(ref, b_dir, day, rows, f"b{n}", None)
        assert outcome(ra) == outcome(rb), (n, step)
        if ra.status == "accepted":
            ids.append((ra.batch_id, rb.batch_id))
    for k in range(-1, 3):
        day = DAY + dt.timedelta(days=k)
        assert (read_day_taps(a_dir, day, engine).to_pylist()
                == read_day_taps(b_dir, day, ref).to_pylist())
    ref.dispose()


def test_the_index_sees_another_process_commit_and_a_withdrawal(engine: Engine,
                                                                tmp_path: Path) -> None:
    data_dir = tmp_path / "store"
    index = KeyIndex(data_dir)
    first = [tap(DAY, 1, i, 1, i, i) for i in range(4)]
    assert send(engine, data_dir, DAY, first, "first", index).accepted == 4
    # another process (no index) stores taps 10-13 of the next day meanwhile
    other = [tap(DAY + dt.timedelta(days=1), 1, 10 + i, 1, 10 + i, i) for i in range(4)]
    assert send(engine, data_dir, DAY + dt.timedelta(days=1), other, "other", None).accepted == 4
    # the call's next batch resends both: all duplicates, the other process's taps included
    again = first + [tap(DAY, 1, 10 + i, 1, 10 + i, 20 + i) for i in range(4)]
    r = send(engine, data_dir, DAY, again, "again", index)
    assert (r.accepted, r.duplicates) == (0, 8)
    # both batches of the day are withdrawn by someone else (the resend first: withdrawing
    # the first alone would accept its kept duplicates): the index that held their keys
    # must let the same taps in again
    withdraw_batch(engine, data_dir, r.batch_id, reason="resent")
    r0 = send(engine, data_dir, DAY, first, "first", index)
    assert r0.status == "already_ingested"
    withdraw_batch(engine, data_dir, r0.batch_id, reason="wrong day")
    r = send(engine, data_dir, DAY, first, "first, again", index)
    assert (r.accepted, r.duplicates) == (4, 0)
    # and a key two days apart is not a duplicate (SPEC §4)
    far = [tap(DAY + dt.timedelta(days=2), 1, i, 1, i, i) for i in range(4)]
    r = send(engine, data_dir, DAY + dt.timedelta(days=2), far, "far", index)
    assert (r.accepted, r.duplicates) == (4, 0)


def test_a_rolled_back_batch_adds_no_keys(engine: Engine, tmp_path: Path,
                                          monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A batch whose transaction fails leaves nothing in the index: its taps are new later."""
    import clearing.ingest as ingest_mod

    data_dir = tmp_path / "store"
    index = KeyIndex(data_dir)
    rows = [tap(DAY, 1, i, 1, i, i) for i in range(3)]

    def boom(step: str) -> None:
        if step == "before_commit":
            raise RuntimeError("crash")

    monkeypatch.setattr(ingest_mod, "_checkpoint", boom)
    try:
        send(engine, data_dir, DAY, rows, "doomed", index)
    except RuntimeError:
        pass
    monkeypatch.setattr(ingest_mod, "_checkpoint", lambda _step: None)
    r = send(engine, data_dir, DAY, rows, "retried", index)
    assert (r.accepted, r.duplicates) == (3, 0)
    assert read_day_taps(data_dir, DAY, engine).num_rows == 3


# (operator, device, device seq, issuer, card, card seq): few values, so keys repeat often
key = st.tuples(st.integers(1, 2), st.integers(0, 2), st.integers(0, 3), st.integers(1, 2),
                st.integers(0, 2), st.integers(0, 3))


def key_table(rows: list[tuple]) -> pa.Table:
    return pa.table({k: pa.array([r[i] for r in rows], TAP_SCHEMA.field(k).type)
                     for i, k in enumerate(KEY_COLUMNS)})


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(files=st.lists(st.tuples(st.integers(0, 3), st.lists(key, max_size=12)), min_size=1,
                      max_size=6),
       query=st.lists(key, max_size=20), lo=st.integers(0, 3), span=st.integers(0, 2),
       hash_mask=st.sampled_from([FULL_HASH, COLLIDING, 0]))
def test_the_fingerprint_index_is_exact(engine: Engine, tmp_path: Path, files: list[tuple],
                                        query: list[tuple], lo: int, span: int,
                                        hash_mask: int) -> None:
    """``KeyIndex.hits`` against a set of (key, day): exact per key kind and day window, with
    the hash whole, truncated to two bits (fingerprints and home slots collide, so every
    answer rests on the check against the stored rows) or to nothing."""
    data_dir = tmp_path / uuid.uuid4().hex  # one store per example
    days = [DAY + dt.timedelta(days=k) for k in range(4)]
    index = KeyIndex(data_dir, hash_mask=hash_mask)
    with session_factory(engine)() as s:
        assert index.refresh(s, days)
    device: set[tuple] = set()
    card: set[tuple] = set()
    for n, (offset, rows) in enumerate(files):
        rel = f"taps/f{n}.parquet"
        (data_dir / "taps").mkdir(parents=True, exist_ok=True)
        accepted = np.array([i % 3 != 2 for i in range(len(rows))], dtype=bool)
        # the stored file holds the accepted rows, in order: what add() registers
        pq.write_table(key_table([r for r, a in zip(rows, accepted, strict=True) if a]),
                       data_dir / rel)
        index.add(days[offset], n + 1, rel, key_table(rows), accepted)
        device |= {(*r[:3], offset) for r, a in zip(rows, accepted, strict=True) if a}
        card |= {(*r[3:], offset) for r, a in zip(rows, accepted, strict=True) if a}
    window = days[lo:lo + span + 1]
    hit_device, hit_card = index.hits(window, key_table(query))
    offsets = range(lo, lo + len(window))
    assert hit_device.tolist() == [any((*q[:3], d) in device for d in offsets) for q in query]
    assert hit_card.tolist() == [any((*q[3:], d) in card for d in offsets) for q in query]
