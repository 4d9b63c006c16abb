"""The fast path's sort equals a stable 4-key lexsort, and its tap records keep every field."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from clearing.sorting import (
    INSERTION_MAX,
    RECORD_COLUMNS,
    TAP_WORDS,
    W_CARD,
    W_ROW,
    rec_card_seq,
    rec_debit,
    rec_device,
    rec_issuer,
    rec_line,
    rec_media,
    rec_operator,
    rec_product,
    rec_stop,
    rec_tap_type,
    rec_ts,
    sort_tap_records,
    sort_taps,
    sort_taps_naive,
)

UINT64_MAX = 2**64 - 1


@st.composite
def tap_keys(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(card_id, issuer, ts_ms, card_seq) columns with many ties and clustered or extreme ids."""
    n = draw(st.integers(0, 300))
    pool = draw(st.lists(st.one_of(st.integers(0, 5), st.integers(0, UINT64_MAX),
                                   st.sampled_from((0, 1, UINT64_MAX - 1, UINT64_MAX))),
                         min_size=1, max_size=12))
    card = np.array(draw(st.lists(st.sampled_from(pool), min_size=n, max_size=n)),
                    dtype=np.uint64)
    issuer = draw(hnp.arrays(np.uint16, n, elements=st.sampled_from((0, 1, 2, 65535))))
    t0 = draw(st.integers(-(2**40), 2**40))
    ts = t0 + draw(hnp.arrays(np.int64, n, elements=st.integers(-5, 5))) * draw(
        st.sampled_from((1, 60_000, 10**12)))
    seq = draw(hnp.arrays(np.int32, n, elements=st.sampled_from((-(2**31), -1, 0, 1, 2**31 - 1))))
    return card, issuer, ts, seq


@settings(max_examples=500, deadline=None)
@given(tap_keys())
def test_sort_equals_lexsort(keys: tuple[np.ndarray, ...]) -> None:
    assert np.array_equal(sort_taps(*keys), sort_taps_naive(*keys))


def test_large_clustered_buckets_are_merge_sorted() -> None:
    # Three card ids over 30 000 taps: buckets far larger than INSERTION_MAX.
    rng = np.random.default_rng(7)
    n = 30_000
    card = rng.integers(1, 4, n).astype(np.uint64)
    issuer = rng.integers(0, 2, n).astype(np.uint16)
    ts = rng.integers(0, 1000, n).astype(np.int64)
    seq = rng.integers(0, 50, n).astype(np.int32)
    assert n // 6 > INSERTION_MAX
    assert np.array_equal(sort_taps(card, issuer, ts, seq), sort_taps_naive(card, issuer, ts, seq))


def test_hashed_ids_and_time_ordered_input() -> None:
    # The shape of a real day: keyed-hash card ids, rows in time order, a few taps per card.
    rng = np.random.default_rng(11)
    cards = rng.integers(0, 2**63, 5_000, dtype=np.int64).view(np.uint64) * np.uint64(2)
    pick = rng.integers(0, cards.size, 40_000)
    ts = np.sort(rng.integers(0, 86_400_000, pick.size)).astype(np.int64)
    seq = rng.integers(0, 100, pick.size).astype(np.int32)
    issuer = (pick % 3).astype(np.uint16)
    keys = (cards[pick], issuer, ts, seq)
    assert np.array_equal(sort_taps(*keys), sort_taps_naive(*keys))


def test_ts_span_wider_than_packed_key_falls_back() -> None:
    card = np.array([1, 1, 1], dtype=np.uint64)
    issuer = np.zeros(3, dtype=np.uint16)
    ts = np.array([2**62, -(2**62), 0], dtype=np.int64)
    seq = np.zeros(3, dtype=np.int32)
    assert sort_taps(card, issuer, ts, seq).tolist() == [1, 2, 0]


def test_lengths_must_agree() -> None:
    with pytest.raises(ValueError, match="one length"):
        sort_taps(np.zeros(2, np.uint64), np.zeros(1, np.uint16), np.zeros(2, np.int64),
                  np.zeros(2, np.int32))


# ---------------------------------------------------------------------------------------------
# sort_tap_records: the fast path's sort, whole taps as 64-byte records, chunk by chunk

_DECODE = {
    "card_id": lambda r, i: int(r[i, W_CARD]), "issuer": rec_issuer, "ts_ms": rec_ts,
    "card_seq": rec_card_seq, "stop": rec_stop, "device_id": rec_device,
    "operator": rec_operator, "tap_type": rec_tap_type, "product": rec_product,
    "line": rec_line, "debited_fen": rec_debit, "media": rec_media,
}
_DTYPES = {"card_id": np.uint64, "issuer": np.uint16, "ts_ms": np.int64, "card_seq": np.int32,
           "stop": np.uint32, "device_id": np.int64, "operator": np.uint16, "tap_type": np.uint8,
           "product": np.uint8, "line": np.uint32, "debited_fen": np.int32, "media": np.uint8}


def _extremes(dtype: type) -> st.SearchStrategy[int]:
    info = np.iinfo(dtype)
    return st.one_of(st.sampled_from((int(info.min), int(info.max), 0, 1)),
                     st.integers(int(info.min), int(info.max)))


@st.composite
def tap_chunks(draw: st.DrawFn) -> list[dict[str, np.ndarray]]:
    """Tap columns at their dtype extremes, split into 1-4 chunks (some empty)."""
    card, issuer, ts, seq = draw(tap_keys())
    n = len(card)
    cols = {"card_id": card, "issuer": issuer, "ts_ms": ts, "card_seq": seq}
    for name in RECORD_COLUMNS:
        if name not in cols:
            cols[name] = draw(hnp.arrays(_DTYPES[name], n, elements=_extremes(_DTYPES[name])))
    cuts = sorted(draw(st.lists(st.integers(0, n), max_size=3)))
    bounds = [0, *cuts, n]
    return [{k: v[a:b] for k, v in cols.items()} for a, b in zip(bounds, bounds[1:], strict=False)]


@settings(max_examples=200, deadline=None)
@given(tap_chunks())
def test_records_are_the_taps_in_sort_order(chunks: list[dict[str, np.ndarray]]) -> None:
    whole = {k: np.concatenate([c[k] for c in chunks]) for k in RECORD_COLUMNS}
    records = sort_tap_records(chunks)
    order = sort_taps_naive(whole["card_id"], whole["issuer"], whole["ts_ms"], whole["card_seq"])
    assert records.shape == (len(order), TAP_WORDS)
    assert records[:, W_ROW].astype(np.int64).tolist() == order.tolist()
    for i, row in enumerate(order.tolist()):
        for name, decode in _DECODE.items():
            assert decode(records, i) == int(whole[name][row]), (name, i, row)
    for threads in (2, 3):  # the threaded scatter and bucket sorts give the same records
        assert np.array_equal(sort_tap_records(chunks, threads=threads), records)


def test_records_fall_back_when_the_ts_span_is_too_wide() -> None:
    n = 3
    cols = {name: np.zeros(n, dtype=_DTYPES[name]) for name in RECORD_COLUMNS}
    cols["card_id"][:] = 9
    cols["ts_ms"][:] = [2**62, -(2**62), 0]
    cols["debited_fen"][:] = [-1, 5, -(2**31)]
    records = sort_tap_records([cols])
    assert records[:, W_ROW].tolist() == [1, 2, 0]
    assert [rec_ts(records, i) for i in range(n)] == [-(2**62), 0, 2**62]
    assert [rec_debit(records, i) for i in range(n)] == [5, -(2**31), -1]
