"""The fast path's one sort equals a stable 4-key lexsort, whatever the card ids look like."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from clearing.sorting import INSERTION_MAX, sort_taps, sort_taps_naive

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
