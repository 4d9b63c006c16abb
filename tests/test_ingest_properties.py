"""SPEC §9 order independence and idempotence for ingestion, on SQLite and PostgreSQL:
a day's taps split into any number of batches, sent in any order, some sent twice, with
duplicates and invalid rows mixed in, store exactly the day's distinct valid taps."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, select

from clearing.batches import Batch
from clearing.ingest import ingest_file
from clearing.taps import TAP_COLUMNS
from clearing.tapstore import read_day_taps
from tariffs.registry import load_registry
from tests.store_support import reset_store
from tongka.testing.strategies import batches, days

REG = load_registry()
DAY = dt.date(2026, 11, 24)
OPERATOR = 101



@st.composite
def noisy_day(draw: st.DrawFn) -> tuple[pa.Table, pa.Table]:
    """(the day's distinct valid taps, the same with resent copies and invalid rows mixed in)."""
    clean = draw(days(day=DAY, straddle=False, max_cards=4, max_events=5))
    rows = clean.to_pylist()
    noisy = list(rows)
    for i in draw(st.lists(st.integers(0, len(rows) - 1), max_size=6)):
        noisy.append(dict(rows[i]))  # the same tap sent again
    for i in draw(st.lists(st.integers(0, len(rows) - 1), max_size=3)):
        noisy.append(dict(rows[i], product=9, device_seq=-1 - i))  # rejected: blocks nothing
    order = draw(st.permutations(range(len(noisy))))
    return clean, pa.Table.from_pylist([noisy[i] for i in order], schema=clean.schema)


def as_set(table: pa.Table) -> list[tuple]:
    return sorted(tuple(r.values()) for r in table.to_pylist())


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(data=st.data())
def test_any_split_any_order_any_resend_stores_the_same_taps(
    engine: Engine, tmp_path: Path, data: st.DataObject
) -> None:
    clean, noisy = data.draw(noisy_day())
    parts = data.draw(batches(noisy, max_batches=4))
    resend = data.draw(st.lists(st.integers(0, len(parts) - 1), max_size=2))
    data_dir = tmp_path / "store"
    reset_store(engine, data_dir)
    files = []
    for i, part in enumerate(parts):
        path = tmp_path / f"part{i}.parquet"
        meta = {b"tongka.service_day": DAY.isoformat().encode(),
                b"tongka.operator": str(OPERATOR).encode()}
        pq.write_table(part.replace_schema_metadata(meta), path)
        files.append(path)
    reports = [ingest_file(engine, data_dir, f, REG) for f in files + [files[i] for i in resend]]
    stored = read_day_taps(data_dir, DAY, engine)
    assert as_set(stored) == as_set(clean)
    fresh = [r for r in reports if r.status == "accepted"]
    assert sum(r.accepted for r in fresh) == clean.num_rows
    assert all(r.received == r.accepted + r.duplicates + r.quarantined for r in reports)
    # acceptance order: each batch's file holds its accepted taps in the batch's file order
    for part, report in zip(parts, reports, strict=False):
        if report.status != "accepted" or not report.accepted:
            continue
        with engine.connect() as c:
            rel = c.execute(select(Batch.tap_path).where(Batch.id == report.batch_id)).scalar_one()
        # the canonical columns (a stored file also carries the optional balance_fen, SPEC §3)
        stored_rows = pq.read_table(data_dir / rel).select(list(TAP_COLUMNS)).to_pylist()
        assert is_subsequence(stored_rows, part.select(list(TAP_COLUMNS)).to_pylist())


def is_subsequence(short: list, long: list) -> bool:
    it = iter(long)
    return all(any(x == y for y in it) for x in short)
