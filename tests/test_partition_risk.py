"""SPEC §10 risk signals of a partitioned clear (clearing.partition): the partitions compute
their cards' signals and per-device leg counts, the coordinator adds the counts up for
DEBIT_MISMATCH, and the day's signals and deny list are the single-process clear's.

Generated days with every kind planted (``tongka.testing.generate_risk``: broken purses,
backward counters, clones, replays of taps first accepted three days earlier, a stale
reader), stored as batches per operator, on SQLite and PostgreSQL and without a database,
in a directory or through an fsspec URL: cleared on one process, then on any number of
partitions, then on one process again, the signals read back are equal (as a set and in
canonical order) and so is the deny list.

One in-process cluster serves the module (2 worker threads).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine

from clearing import partition as scale
from clearing import risk_store
from clearing.day import clear_day, read_day_legs
from clearing.fast import match_and_price_fast
from clearing.ingest import ingest_taps
from clearing.legs_store import SIGNALS_FIELD, parts_manifest
from clearing.partition import local_client
from clearing.risk import DENY_KINDS, RiskKind
from clearing.risk_store import denylist_path, read_day_signals, risk_summary, signals_path
from tariffs.load import load_tariff_set
from tongka.testing.generate import generate
from tongka.testing.generate_risk import PlantedDay, plant, truth_of

T = load_tariff_set()
BASE = dt.date(2026, 3, 2)
SPACING = 40  # days between examples: no replay reach or deny-list window overlaps
_fresh = itertools.count()


@pytest.fixture(scope="module")
def client() -> Iterator[object]:
    with local_client(2, processes=False) as c:
        yield c


def _planted(day: dt.date, n: int, seed: int) -> PlantedDay:
    g = generate(day, n, seed, T, price=match_and_price_fast)
    return plant(day, g.table.filter(g.accepted_mask), seed)


def _ingest(engine: Engine | None, home: Path, taps: pa.Table, day: dt.date, tag: str) -> None:
    """One batch per operator (with a database), or one file of the day without one."""
    if engine is None:
        from clearing import tapstore

        sha = hashlib.sha256(f"{tag}{day}".encode()).hexdigest()
        tapstore.write_batch_taps(home, tapstore.batch_relpath(day, 1, sha), taps,
                                  {tapstore.META_DAY_SEQ: b"1"})
        return
    ops = np.asarray(taps.column("operator").to_numpy())
    for op in np.unique(ops).tolist():
        part = taps.filter(pa.array(ops == op))
        sha = hashlib.sha256(f"{tag}{day}{op}{part.num_rows}".encode()).hexdigest()
        ingest_taps(engine, home, part, [], file_sha256=sha, source_format="canonical",
                    source_name=f"{tag}-{op}.parquet", service_day=day, operator=int(op),
                    tariffs=T)


def _state(home: Path, day: dt.date) -> tuple[pa.Table, bytes]:
    signals = risk_store.read_day_signals(home, day)
    assert signals is not None
    return signals, denylist_path(home, day).read_bytes()


def _as_set(signals: pa.Table) -> list[str]:
    return sorted(repr(r) for r in signals.to_pylist())


@settings(max_examples=4, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(seed=st.integers(0, 2**16), n=st.integers(1500, 4000),
       partitions=st.sampled_from([1, 2, 3, 5, 64]), with_db=st.booleans(),
       by_url=st.booleans())
def test_a_partitioned_clear_gives_the_single_process_signals_and_deny_list(
    engine: Engine, tmp_path: Path, client: object, seed: int, n: int,
    partitions: int, with_db: bool, by_url: bool,
) -> None:
    day = BASE + dt.timedelta(days=SPACING * next(_fresh))
    p = _planted(day, n, seed)
    e = engine if with_db else None
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    _ingest(e, home, p.earlier, p.earlier_day, "earlier")
    _ingest(e, home, p.taps, day, "day")

    single = clear_day(home, day, T, engine=e)
    want, denied = _state(home, day)
    assert truth_of(want) == set(p.truth)  # the planted cases: a test that can fail
    assert denied.count(b"\n") == 1 + sum(1 for k, _, _ in p.truth if RiskKind[k] in DENY_KINDS)
    summary = risk_summary(home, day, e)

    scaled = clear_day(home, day, T, engine=e, partitions=partitions, client=client,
                       storage=f"file://{home}" if by_url else None)
    assert not signals_path(home, day).exists()  # superseded: the manifest names the signals
    got, got_denied = _state(home, day)
    assert _as_set(got) == _as_set(want)
    assert got.equals(want)  # canonical order, read back
    assert got_denied == denied
    assert scaled.signals == single.signals == want.num_rows
    assert risk_summary(home, day, e) == summary
    assert read_day_legs(home, day).num_rows == scaled.legs == single.legs

    again = clear_day(home, day, T, engine=e)  # one process after the partitions
    assert SIGNALS_FIELD not in (parts_manifest(home, day) or {})
    back, back_denied = _state(home, day)
    assert back.equals(want) and back_denied == denied and again.signals == single.signals


def test_the_coordinator_receives_counts_not_evidence(tmp_path: Path, client: object) -> None:
    """The partitions' results hold device counts and no evidence; earlier days' files are
    split once, for their own clears and every later one; DEBIT_MISMATCH is found across
    partitions even when no partition holds 20 of the reader's mismatching legs."""
    day = BASE + dt.timedelta(days=SPACING * next(_fresh))
    p = _planted(day, 3000, 11)
    _ingest(None, tmp_path, p.earlier, p.earlier_day, "earlier")
    _ingest(None, tmp_path, p.taps, day, "day")
    from clearing.tapstore import day_files_on_disk

    def listed(when: dt.date, of: dt.date | None) -> list[scale.BatchFile]:
        return [scale.BatchFile(f.relative_to(tmp_path).as_posix(), None,
                                pq.read_metadata(f).num_rows, of)
                for f in day_files_on_disk(tmp_path, when)]

    batches, earlier = listed(day, None), listed(p.earlier_day, p.earlier_day)
    done = scale.clear_on_cluster(client, str(tmp_path), day, batches, T, 16, 0, None, 20,
                                  earlier=earlier)
    assert all(r.evidence is None and r.devices is not None for r in done.parts)
    assert all(s.written for s in done.earlier) and done.earlier
    stale = {(k, o) for k, o, _ in p.truth if k == "DEBIT_MISMATCH"}
    assert stale and done.device_signals == len(stale) and done.devices_path
    per_part = [int(r.devices[3].max(initial=0)) for r in done.parts if r.devices is not None]
    assert max(per_part) < 20  # no partition alone would have raised it
    again = scale.clear_on_cluster(client, str(tmp_path), day, batches, T, 3, 0, None, 20,
                                   earlier=earlier)
    assert not any(s.written for s in again.earlier)  # reused
    assert again.signals == done.signals


def test_a_failed_partitioned_clear_leaves_the_signals_as_they_were(
    tmp_path: Path, client: object
) -> None:
    day = BASE + dt.timedelta(days=SPACING * next(_fresh))
    p = _planted(day, 2000, 5)
    _ingest(None, tmp_path, p.earlier, p.earlier_day, "earlier")
    _ingest(None, tmp_path, p.taps, day, "day")
    clear_day(tmp_path, day, T, partitions=3, client=client)
    before = _state(tmp_path, day)

    class Broken:
        key = b"tongka.test_broken"

        def of(self, legs: pa.Table, day: dt.date) -> None:
            raise RuntimeError("a partition failed")

        def merge(self, parts: object, day: dt.date) -> None:  # pragma: no cover
            return None

        def dumps(self, merged: object) -> bytes:  # pragma: no cover
            return b""

    with pytest.raises(RuntimeError, match="a partition failed"):
        clear_day(tmp_path, day, T, partitions=2, client=client, summary=Broken())
    after = _state(tmp_path, day)
    assert after[0].equals(before[0]) and after[1] == before[1]


def test_risk_store_reads_a_partitioned_days_signals(tmp_path: Path, client: object) -> None:
    day = BASE + dt.timedelta(days=SPACING * next(_fresh))
    p = _planted(day, 1500, 3)
    _ingest(None, tmp_path, p.taps, day, "day")
    clear_day(tmp_path, day, T, partitions=2, client=client)
    signals = read_day_signals(tmp_path, day)
    assert signals is not None and truth_of(signals) == {
        t for t in p.truth if t[0] != "CARD_SEQ_REPLAY"}
