"""CARD_SEQ_REPLAY's lookback on a thread of its own (``risk_store.start_replay_lookback``),
started when the day's taps are read and joined by ``write_day_signals(lookback=...)``: the
same signals, deny list and digest as without it; the thread's errors raised by
``write_day_signals``; a lookback abandoned (cancelled, or its ``with`` block left by an
error) stops and has written nothing."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy import Engine
from test_risk_digest import base_day, clear_signals_only, earlier_day, store_day
from test_risk_store import DAY, ingest_all, planted, write_batches

from clearing import risk_digest, risk_store, tapstore
from clearing.day import clear_day
from clearing.fast import match_and_price_sorted, tap_chunks
from clearing.legs_store import REVISION_KEY, legs_path
from clearing.parquet_io import write_atomic
from clearing.risk import RiskKind, record_signals, stop_coordinates
from clearing.risk_digest import DayHashes, EarlierDigest
from clearing.risk_store import (
    ReplayLookback,
    denylist_path,
    read_day_signals,
    signals_path,
    start_replay_lookback,
    write_day_signals,
)
from clearing.sorted_day import read_sorted_day
from clearing.sorting import sort_tap_records
from clearing.taps import TAP_COLUMNS
from clearing.tapstore import read_day_taps
from tariffs.load import load_tariff_set

T = load_tariff_set()
REPLAY = RiskKind.CARD_SEQ_REPLAY.name


def test_hashes_of_a_table_in_chunks_equal_the_records_and_columns_ones() -> None:
    taps = base_day()
    cut = [0, 1, 150, 151, 400, taps.num_rows]  # chunks of every size, an empty one included
    chunked = pa.concat_tables([taps.slice(a, b - a) for a, b in zip(cut, cut[1:], strict=False)])
    assert chunked.column("card_id").num_chunks == len(cut) - 1
    a = DayHashes.of_table(chunked)
    b = DayHashes.of(keys={c: taps.column(c).to_numpy() for c in tapstore.CARD_KEY})
    r = DayHashes.of(records=sort_tap_records(tap_chunks(taps)))
    for other in (b, r):
        assert np.array_equal(a.hashes, other.hashes) and np.array_equal(a.rows, other.rows)
    assert len(DayHashes.of_table(taps.slice(0, 0)).hashes) == 0


# ---------------------------------------------------------------------------------------------
# The same results with a lookback as without


def history(root: Path) -> pa.Table:
    """DAY stored in three files, and five earlier days with replays into it: three cleared
    (digests), two never cleared (streamed), one beyond the reach (ignored)."""
    taps = base_day()
    n = taps.num_rows
    store_day(root, DAY, taps, 3)
    for back, cleared in ((2, True), (3, False), (9, True), (17, False), (30, True), (31, True)):
        when = DAY - dt.timedelta(days=back)
        store_day(root, when, earlier_day(taps, back, np.arange(n) % (5 + back) == 0), 2)
        if cleared:
            clear_signals_only(root, when)
    return taps


def outputs(root: Path, day: dt.date) -> dict[str, Any]:
    """What the day's signals leave on disk: signals, deny list, the digest's arrays and
    meta (its token aside)."""
    meta = risk_digest.read_meta(root, day)
    out: dict[str, Any] = {"signals": read_day_signals(root, day),
                           "denylist": denylist_path(root, day).read_text("utf-8"),
                           "meta": None if meta is None else {**meta, "token": None}}
    if meta is not None:
        folder = risk_digest.digest_dir(root, day)
        out["keys"] = np.load(folder / f"keys-{meta['token']}.npy")
        out["rows"] = np.load(folder / f"rows-{meta['token']}.npy")
    return out


def same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return a.keys() == b.keys() and all(
        np.array_equal(a[k], b[k]) if isinstance(a[k], np.ndarray)
        else (a[k].equals(b[k]) if isinstance(a[k], pa.Table) else a[k] == b[k]) for k in a)


def clear_like(root: Path, taps: pa.Table, *, lookback: bool, records: bool,
               engine: Engine | None = None, revision: int = 0) -> dict[str, Any]:
    """What ``clear_day`` does around the signals (the lookback started on the taps as read,
    pricing, the legs written, the pricing view of the taps dropped), then its outputs."""
    with start_replay_lookback(root, DAY, taps, engine=engine) if lookback else _none() as lb:
        legs, recs = match_and_price_sorted(taps.select(list(TAP_COLUMNS)), T)
        legs = legs.replace_schema_metadata({REVISION_KEY: str(revision).encode()})
        write_atomic(legs, legs_path(root, DAY))
        signalled = taps.drop_columns(["product", "media", "line", "tap_type"])  # a new table
        write_day_signals(root, DAY, signalled, legs, engine=engine, lookback=lb,
                          records=recs if records else None)
    return outputs(root, DAY)


class _none:  # noqa: N801 - a `with` of no lookback
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


@pytest.mark.parametrize("records", [True, False])
def test_lookback_gives_the_same_signals_deny_list_and_digest(tmp_path: Path,
                                                              records: bool) -> None:
    taps = history(tmp_path)
    day_taps = read_day_taps(tmp_path, DAY, optional=True)
    assert day_taps.column("card_id").num_chunks >= 3
    kinds = {type(c) for c in risk_store.earlier_keys(tmp_path, DAY, digests=True)}
    assert kinds == {EarlierDigest, risk_store.EarlierKeys}  # both ways of reading a day
    without = clear_like(tmp_path, day_taps, lookback=False, records=records)
    assert without["signals"].column("kind").to_pylist().count(REPLAY) > 0
    assert without["meta"] is not None and without["meta"]["taps"] == taps.num_rows
    signals_path(tmp_path, DAY).unlink()
    with_lookback = clear_like(tmp_path, day_taps, lookback=True, records=records)
    assert same(with_lookback, without)


def test_lookback_through_clear_day_steps_with_a_database(engine: Engine, tmp_path: Path) -> None:
    p = planted(n=3000)
    ingest_all(engine, tmp_path, write_batches(tmp_path / "early", p.earlier, p.earlier_day))
    clear_day(tmp_path, p.earlier_day, T, engine=engine)  # a digest of the earlier day
    ingest_all(engine, tmp_path, write_batches(tmp_path / "in", p.taps, DAY))
    clear_day(tmp_path, DAY, T, engine=engine)
    want = outputs(tmp_path, DAY)
    assert REPLAY in set(want["signals"].column("kind").to_pylist())
    revision = int(pq.read_schema(legs_path(tmp_path, DAY)).metadata[REVISION_KEY])
    taps = read_day_taps(tmp_path, DAY, engine, optional=True)
    for records in (True, False):
        got = clear_like(tmp_path, taps, lookback=True, records=records, engine=engine,
                         revision=revision)
        assert same(got, want)


def test_a_lookback_of_other_taps_or_for_the_reference_is_not_used(tmp_path: Path) -> None:
    history(tmp_path)
    taps = read_day_taps(tmp_path, DAY, optional=True)
    want = clear_like(tmp_path, taps, lookback=False, records=True)
    other = taps.slice(0, taps.num_rows - 1)
    with start_replay_lookback(tmp_path, DAY, other) as lb:  # a tap short
        assert not lb.serves(tmp_path, DAY, taps, None)
        legs = pq.read_table(legs_path(tmp_path, DAY))
        write_day_signals(tmp_path, DAY, taps, legs, lookback=lb)
        assert not lb.running and lb.result() is None
    assert same(outputs(tmp_path, DAY), want)
    moved = taps.set_column(taps.column_names.index("card_seq"), "card_seq",
                            pa.array(np.asarray(taps.column("card_seq").to_numpy()) + 1))
    with start_replay_lookback(tmp_path, DAY, moved) as lb:  # other keys, as many rows
        assert not lb.serves(tmp_path, DAY, taps, None)
        assert lb.serves(tmp_path, DAY, moved.select(taps.column_names[::-1]), None)
    lb = start_replay_lookback(tmp_path, DAY, taps, reference=True)
    assert not lb.running and lb.result() is None
    write_day_signals(tmp_path, DAY, taps, legs, lookback=lb, reference=True)
    assert read_day_signals(tmp_path, DAY).equals(want["signals"])  # type: ignore[union-attr]


# ---------------------------------------------------------------------------------------------
# Errors and abandoned lookbacks


def test_an_error_in_the_lookback_thread_is_raised_by_write_day_signals(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    history(tmp_path)
    taps = read_day_taps(tmp_path, DAY, optional=True)
    legs, records = match_and_price_sorted(taps.select(list(TAP_COLUMNS)), T)
    legs = legs.replace_schema_metadata({REVISION_KEY: b"0"})
    write_atomic(legs, legs_path(tmp_path, DAY))

    class Boom(Exception):
        pass

    def boom(*args: object, **kwargs: object) -> None:
        raise Boom("stored keys unreadable")

    monkeypatch.setattr(risk_store, "replay_evidence", boom)  # in the thread
    with start_replay_lookback(tmp_path, DAY, taps) as lb, pytest.raises(Boom):
        write_day_signals(tmp_path, DAY, taps, legs, lookback=lb, records=records)
    assert not signals_path(tmp_path, DAY).exists() and not denylist_path(tmp_path, DAY).exists()
    assert risk_digest.read_meta(tmp_path, DAY) is None
    monkeypatch.setattr(risk_store, "earlier_keys", boom)  # the listing, on the caller's thread
    lb = start_replay_lookback(tmp_path, DAY, taps)
    assert not lb.running
    with pytest.raises(Boom):
        write_day_signals(tmp_path, DAY, taps, legs, lookback=lb, records=records)
    monkeypatch.undo()
    write_day_signals(tmp_path, DAY, taps, legs, lookback=start_replay_lookback(tmp_path, DAY,
                                                                               taps))
    assert read_day_signals(tmp_path, DAY) is not None


def slow_earlier(monkeypatch: pytest.MonkeyPatch) -> tuple[threading.Event, threading.Event,
                                                            list[int]]:
    """Earlier days that come one at a time, each waiting for ``go``; ``closed`` is set when
    the stream is closed (its read-ahead thread stopped); ``served`` counts the days given."""
    go, closed, served = threading.Event(), threading.Event(), [0]
    real = risk_store.earlier_keys

    def earlier_keys(*args: Any, **kwargs: Any) -> Iterator[Any]:
        chunks = real(*args, **kwargs)

        def slow() -> Iterator[Any]:
            try:
                for chunk in chunks:
                    go.wait(5)
                    served[0] += 1
                    yield chunk
            finally:
                closed.set()
        return slow()

    monkeypatch.setattr(risk_store, "earlier_keys", earlier_keys)
    return go, closed, served


def files_under(root: Path) -> dict[str, int]:
    return {p.relative_to(root).as_posix(): p.stat().st_mtime_ns
            for p in root.rglob("*") if p.is_file()}


def test_cancel_stops_the_lookback_thread_and_writes_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    history(tmp_path)
    taps = read_day_taps(tmp_path, DAY, optional=True)
    go, closed, served = slow_earlier(monkeypatch)
    before = files_under(tmp_path)
    lb = start_replay_lookback(tmp_path, DAY, taps)
    assert lb.running
    go.set()
    lb.cancel()
    assert not lb.running and closed.is_set() and served[0] <= 1
    assert lb.result() is None
    lb.cancel()  # again: nothing
    assert files_under(tmp_path) == before
    assert not any(t.name.startswith("risk-replay") for t in threading.enumerate())


def test_a_failure_inside_the_with_block_stops_the_lookback(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As a clear whose pricing fails: the error goes on, the thread is gone, nothing was
    written (no signals, deny list or digest)."""
    history(tmp_path)
    taps = read_day_taps(tmp_path, DAY, optional=True)
    go, closed, _ = slow_earlier(monkeypatch)
    before = files_under(tmp_path)
    lb: ReplayLookback | None = None
    with pytest.raises(RuntimeError, match="pricing failed"):
        with start_replay_lookback(tmp_path, DAY, taps) as lb:
            assert lb.running
            raise RuntimeError("pricing failed")
    assert lb is not None and not lb.running and closed.is_set()
    assert files_under(tmp_path) == before
    go.set()


def test_the_digest_written_beside_the_signals_raises_its_errors(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The day's digest is written on a thread while its signals are computed: its error is
    raised by write_day_signals (no deny list written then); an error of the signals goes on
    after the digest's thread has ended."""
    history(tmp_path)
    taps = read_day_taps(tmp_path, DAY, optional=True)
    legs, records = match_and_price_sorted(taps.select(list(TAP_COLUMNS)), T)
    legs = legs.replace_schema_metadata({REVISION_KEY: b"0"})
    write_atomic(legs, legs_path(tmp_path, DAY))
    real = risk_digest.write_digest

    def full_disk(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(risk_digest, "write_digest", full_disk)
    with pytest.raises(OSError, match="No space"):
        write_day_signals(tmp_path, DAY, taps, legs, records=records)
    assert not denylist_path(tmp_path, DAY).exists()
    assert risk_digest.read_meta(tmp_path, DAY) is None
    written = threading.Event()

    def slow_digest(*args: Any, **kwargs: Any) -> Path:
        threading.Event().wait(0.3)
        path = real(*args, **kwargs)
        written.set()
        return path

    def broken(*args: object, **kwargs: object) -> None:
        raise ValueError("signals failed")

    monkeypatch.setattr(risk_digest, "write_digest", slow_digest)
    monkeypatch.setattr(risk_store, "day_signals", broken)
    with pytest.raises(ValueError, match="signals failed"):
        write_day_signals(tmp_path, DAY, taps, legs, records=records)
    assert written.is_set()  # waited for, not left running
    assert not any(t.name == "risk-digest-write" for t in threading.enumerate())


def test_a_sorted_day_lookback_walks_the_cards_beside_pricing_with_the_same_outputs(
        tmp_path: Path) -> None:
    """``clear_day``'s own way: the lookback started on the day read straight into records
    (``clearing.sorted_day``) also walks the per-card signals, and the day's signals, deny
    list and digest are those of the table path with no lookback."""
    p = planted(n=3000)  # card signals of every kind planted, and replays from earlier_day
    store_day(tmp_path, DAY, p.taps, 3)
    store_day(tmp_path, p.earlier_day, p.earlier, 2)
    clear_signals_only(tmp_path, p.earlier_day)  # a digest of the earlier day
    day_taps = read_day_taps(tmp_path, DAY, optional=True)
    without = clear_like(tmp_path, day_taps, lookback=False, records=True)
    assert REPLAY in set(without["signals"].column("kind").to_pylist())
    signals_path(tmp_path, DAY).unlink()
    day = read_sorted_day(tmp_path, DAY)
    with start_replay_lookback(tmp_path, DAY, day) as lb:
        legs, _ = match_and_price_sorted(day_taps.select(list(TAP_COLUMNS)), T)
        legs = legs.replace_schema_metadata({REVISION_KEY: b"0"})
        write_atomic(legs, legs_path(tmp_path, DAY))
        assert lb.result() is not None
        walked = lb.walked
        assert walked is not None and len(walked) > 0
        assert np.array_equal(walked, record_signals(day.records, day.balance,
                                                     stop_coordinates()))
        write_day_signals(tmp_path, DAY, day, legs, lookback=lb)
    assert lb.walked is None  # dropped with the lookback
    assert same(outputs(tmp_path, DAY), without)
