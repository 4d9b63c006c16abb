"""Partitioned pricing on dask.distributed equals the single-process fast path (ARCHITECTURE)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clearing.fast import match_and_price_fast
from clearing.partition import (
    card_partitions,
    local_client,
    match_and_price_partitioned,
    split_by_card,
)
from tariffs.load import load_tariff_set
from tongka.testing.generate import generate

DAY = dt.date(2026, 11, 24)


@pytest.fixture(scope="module")
def day_taps():  # type: ignore[no-untyped-def]
    tariffs = load_tariff_set()
    g = generate(DAY, 6000, 3, tariffs, price=match_and_price_fast)
    return g.table.filter(g.accepted_mask), tariffs


@settings(max_examples=50, deadline=None)
@given(n=st.integers(1, 9))
def test_a_card_lives_in_exactly_one_partition(day_taps, n: int) -> None:  # type: ignore[no-untyped-def]
    taps, _ = day_taps
    parts = split_by_card(taps, n)
    assert sum(p.num_rows for p in parts) == taps.num_rows
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


def test_partitioned_run_on_a_dask_cluster_equals_the_single_process_run(day_taps) -> None:  # type: ignore[no-untyped-def]
    taps, tariffs = day_taps
    single = match_and_price_fast(taps, tariffs)
    with local_client(2) as client:
        partitioned = match_and_price_partitioned(taps, tariffs, client, partitions=5)
    assert partitioned.equals(single)
