"""The key index of one ingestion call (``clearing.tapstore.KeyIndex``) gives exactly the
de-duplication of the streaming path (SPEC §4), on SQLite and PostgreSQL, whatever else
commits or withdraws between the call's batches: another process's batches, withdrawals,
batches of the neighbouring days and of days two apart."""

from __future__ import annotations

import datetime as dt
import hashlib
import shutil
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, delete

from clearing.batches import Batch, QuarantinedRow
from clearing.days import ServiceDay
from clearing.db import make_engine, transaction
from clearing.ingest import BatchReport, ingest_taps
from clearing.service_day import local_ms
from clearing.taps import TapType, taps_table
from clearing.tapstore import KeyIndex, read_day_taps
from clearing.withdraw import withdraw_batch
from tariffs.registry import FLAT, load_registry
from tongka.schema import upgrade

REG = load_registry()
DAY = dt.date(2026, 11, 24)
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


def reset(engine: Engine, data_dir: Path) -> None:
    with transaction(engine) as s:
        s.execute(delete(QuarantinedRow))
        s.execute(delete(Batch))
        s.execute(delete(ServiceDay))
    shutil.rmtree(data_dir, ignore_errors=True)
    data_dir.mkdir(parents=True)


# (device, device seq, card, card seq, rejected): few values, so keys collide often
row = st.tuples(st.integers(0, 2), st.integers(0, 4), st.integers(0, 2), st.integers(0, 4),
                st.sampled_from([False, False, False, True]))
batch = st.tuples(st.just("batch"), st.integers(-1, 2), st.lists(row, min_size=1, max_size=8),
                  st.booleans())  # (kind, day offset, rows, through the call's index)
withdraw = st.tuples(st.just("withdraw"), st.integers(0, 20))


@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(steps=st.lists(st.one_of(batch, batch, batch, withdraw), min_size=1, max_size=10),
       max_keys=st.sampled_from([1 << 20, 1 << 20, 12]))
def test_the_call_index_dedups_as_streaming_does(engine: Engine, tmp_path: Path,
                                                 steps: list[tuple], max_keys: int) -> None:
    """Store A: the call's batches through one KeyIndex, the "other process" ones and the
    withdrawals straight into the same database between them. Store B (SQLite): everything by
    the streaming path. Every report and every day's stored taps must be the same, also when
    the index outgrows its budget midway (``max_keys`` 12) and the call streams from there."""
    ref = make_engine(f"sqlite:///{tmp_path / 'ref.sqlite'}")
    upgrade(ref)
    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    reset(engine, a_dir)
    reset(ref, b_dir)
    index = KeyIndex(a_dir, max_keys=max_keys)
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


def test_the_key_set_is_exact_per_key_and_day() -> None:
    """The index's hash set: exact membership of (key, day) on many colliding small keys, a
    key stored on several days, and growth while adding."""
    import numpy as np

    from clearing.tapstore import _DEVICE_SEED, _KeySet

    rng = np.random.default_rng(7)
    n = 200_000
    a = rng.integers(0, 5, n).astype(np.uint16)
    b = rng.integers(0, 300, n).astype(np.int64)
    c = rng.integers(0, 300, n).astype(np.int64)
    day = rng.integers(0, 4, n)
    keys = _KeySet([np.dtype(np.uint16), np.dtype(np.int64), np.dtype(np.int64)], _DEVICE_SEED,
                   1 << 30)
    stored = set()
    for d in range(3):  # days 0-2 stored, in two adds each; day 3 never
        for part in np.array_split(np.flatnonzero((day == d)[: n // 2]), 2):
            keys.add(d, a[part], b[part], c[part])
            stored |= {(int(a[i]), int(b[i]), int(c[i]), d) for i in part}
    assert keys.n == len(stored)
    for lo, hi in [(0, 0), (0, 2), (1, 3), (2, 2), (3, 3)]:
        got = keys.contains(lo, hi, a, b, c)
        want = [any((int(a[i]), int(b[i]), int(c[i]), d) in stored for d in range(lo, hi + 1))
                for i in range(n)]
        assert got.tolist() == want, (lo, hi)
