"""The tap store's key index: the numba de-duplication pass equals a plain set-based reading of
SPEC §4, on adversarial keys (extreme values, many collisions), and the files keep their order."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import given, settings
from hypothesis import strategies as st

from clearing import parquet_io, tapstore
from clearing.taps import TAP_SCHEMA

KEY_SCHEMA = pa.schema([TAP_SCHEMA.field(c) for c in tapstore.KEY_COLUMNS])


def reference_dedup(stored: list[tuple], batch: list[tuple], candidate: list[bool]) -> list[int]:
    """SPEC §4 read aloud: earlier accepted taps' keys block; only accepted taps register."""
    devices = {k[:3] for k in stored}
    cards = {k[3:] for k in stored}
    out = []
    for key, ok in zip(batch, candidate, strict=True):
        if not ok:
            out.append(tapstore.NOT_CANDIDATE)
        elif key[:3] in devices or key[3:] in cards:
            out.append(tapstore.DUPLICATE)
        else:
            devices.add(key[:3])
            cards.add(key[3:])
            out.append(tapstore.ACCEPTED)
    return out


def key_table(keys: list[tuple]) -> pa.Table:
    cols = list(zip(*keys, strict=True)) if keys else [[] for _ in tapstore.KEY_COLUMNS]
    return pa.table([pa.array(c, f.type) for c, f in zip(cols, KEY_SCHEMA, strict=True)],
                    schema=KEY_SCHEMA)


# Few values per field, extremes included, so keys collide often and hashing meets the edges.
keys = st.tuples(
    st.sampled_from([0, 1, 2**16 - 1]),
    st.sampled_from([0, 1, -1, 2**63 - 1, -(2**63)]),
    st.sampled_from([0, 7, -7, 2**63 - 1]),
    st.sampled_from([0, 1, 2**16 - 1]),
    st.sampled_from([0, 1, 2**63, 2**64 - 1]),
    st.sampled_from([0, 1, -1, 2**31 - 1, -(2**31)]),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(keys, max_size=30), st.lists(st.tuples(keys, st.booleans()), max_size=60))
def test_dedup_equals_the_reference(stored: list[tuple], batch: list[tuple]) -> None:
    rows = [k for k, _ in batch]
    candidate = [ok for _, ok in batch]
    got = tapstore.dedup([key_table(stored)], key_table(rows), np.array(candidate, dtype=bool))
    assert got.tolist() == reference_dedup(stored, rows, candidate)


def test_dedup_at_scale_with_a_planted_pattern() -> None:
    """A larger run (table resizing, long probe chains) against the reference."""
    rng = np.random.default_rng(7)
    n = 20_000
    raw = [rng.integers(0, 50, n), rng.integers(0, 40, n), rng.integers(0, 30, n),
           rng.integers(0, 3, n), rng.integers(0, 2000, n), rng.integers(0, 20, n)]
    all_keys = [tuple(int(c[i]) for c in raw) for i in range(n)]
    stored, batch = all_keys[: n // 4], all_keys[n // 4:]
    candidate = (rng.random(len(batch)) < 0.9).tolist()
    got = tapstore.dedup([key_table(stored[:1000]), key_table(stored[1000:])],
                         key_table(batch), np.array(candidate))
    want = reference_dedup(stored, batch, candidate)
    assert got.tolist() == want
    assert {tapstore.ACCEPTED, tapstore.DUPLICATE, tapstore.NOT_CANDIDATE} <= set(want)


def test_files_are_written_whole_and_read_in_day_order(tmp_path: Path) -> None:
    day = dt.date(2026, 11, 24)
    rows = {seq: TAP_SCHEMA.empty_table() for seq in (1, 2, 3)}
    for seq in rows:
        rows[seq] = pa.Table.from_pylist(
            [dict(operator=101, device_id=seq, device_seq=i, card_id=i, card_seq=seq, issuer=1,
                  product=0, media=0, ts_ms=0, city=420100, line=1, stop=0, tap_type=0,
                  debited_fen=-1) for i in range(3)], schema=TAP_SCHEMA)
    # written out of order, under operators that sort the other way
    for seq, op in ((2, 101), (3, 102), (1, 201)):
        rel = tapstore.batch_relpath(day, op, f"{seq:064x}")
        meta = {tapstore.META_DAY_SEQ: str(seq).encode()}
        tapstore.write_batch_taps(tmp_path, rel, rows[seq], meta)
    got = tapstore.read_day_taps(tmp_path, day)
    assert got.to_pylist() == [r for seq in (1, 2, 3) for r in rows[seq].to_pylist()]
    assert got.schema == TAP_SCHEMA
    leftovers = [p for p in tmp_path.rglob("*") if p.name.endswith(parquet_io.TMP_SUFFIX)]
    assert leftovers == []
    stored = pq.read_schema(next(tmp_path.rglob("*.parquet")))
    assert stored.metadata[tapstore.META_DAY_SEQ] in {b"1", b"2", b"3"}


def test_an_empty_day_reads_as_an_empty_table(tmp_path: Path) -> None:
    got = tapstore.read_day_taps(tmp_path, dt.date(2026, 1, 1))
    assert got.num_rows == 0 and got.schema == TAP_SCHEMA
