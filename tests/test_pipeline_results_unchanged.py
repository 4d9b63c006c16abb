"""Issue 13: settling faster must not change a fen. The fast settlement equals its plain twins.

On generated days with every rule kind (``generate`` at a few thousand taps, seeds varied,
priced by the fast path as ``tongka clear`` does), ``allocate`` equals ``allocate_reference``
(chains grouped in a dict, ``allocate_chain`` per chain) whether or not the legs come in their
stored order, ``day_obligations`` equals ``obligations_reference`` (SPEC §8 read leg by leg),
and ``compute_day``'s positions, payments and discount lines are those the plain pieces give.
Settling a stored legs file a row group at a time (``legs_file_partials``, what ``tongka
settle`` does) gives the figures ``compute_day`` gives on the whole table, however small the
row groups (cards and chains across their boundaries).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clearing.fast import match_and_price_fast
from clearing.legs import LEG_SORT_KEYS, NO_CHAIN, Apportionment
from settlement.apportion import (
    _CHAIN_KEYS,
    _ORDER_KEYS,
    _in_chain_order,
    allocate,
    allocate_reference,
)
from settlement.netting import net_positions, payment_instructions
from settlement.obligations import day_obligations, discount_lines, obligations_reference
from settlement.partials import day_partials, legs_file_partials, partial_figures
from settlement.settle import compute_day
from tariffs.load import load_tariff_set

try:  # the generator is moving from clearing/ to tongka/testing/ (a change in progress)
    from tongka.testing.generate import generate
except ImportError:  # pragma: no cover - the older layout
    from clearing.generate import generate  # type: ignore[no-redef]

DAY = dt.date(2026, 11, 24)
TARIFFS = load_tariff_set()


def _day_legs(seed: int, n_taps: int = 3000) -> pa.Table:
    """A generated day's accepted taps priced by the fast path: legs as ``tongka clear`` writes
    them (in ``LEG_SORT_KEYS`` order)."""
    day = generate(DAY, n_taps, seed, TARIFFS, price=match_and_price_fast)
    taps = day.table.filter(pa.array(day.accepted_mask))
    return match_and_price_fast(taps, TARIFFS)


def _shuffled(legs: pa.Table, seed: int) -> pa.Table:
    order = np.random.default_rng(seed).permutation(legs.num_rows)
    return legs.take(pa.array(order))


def _chain_order(legs: pa.Table) -> bool:
    keys = [legs.column(k).to_numpy() for k in _CHAIN_KEYS]
    order_keys = [legs.column(k).to_numpy() for k in _ORDER_KEYS]
    rows = np.flatnonzero(keys[3] != NO_CHAIN)
    return _in_chain_order([k[rows] for k in keys], [k[rows] for k in order_keys])


def _shared_chains(legs: pa.Table) -> int:
    """Legs in pro-rata chains of several legs: the days must exercise the remainder rule."""
    t = legs.filter(pc.and_(
        pc.equal(legs.column("apportionment"), int(Apportionment.PRO_RATA)),
        pc.greater(legs.column("transfer_no"), 0)))
    return t.num_rows


@pytest.fixture(scope="module")
def day_legs() -> pa.Table:
    return _day_legs(13, 6000)


def test_generated_day_has_what_the_checks_need(day_legs: pa.Table) -> None:
    """Pro-rata chains of several legs, penalty legs, government-funded discounts."""
    assert _shared_chains(day_legs) > 0
    assert (day_legs.column("chain").to_numpy() == NO_CHAIN).any()
    assert any(line.funder == "government" for line in discount_lines(day_legs, TARIFFS, DAY))


def test_stored_legs_take_the_path_without_a_sort(day_legs: pa.Table) -> None:
    """The legs as cleared are in chain order (so ``allocate`` skips its lexsort)..."""
    assert day_legs.equals(day_legs.sort_by([(k, "ascending") for k in LEG_SORT_KEYS]))
    assert _chain_order(day_legs)
    # ...and a shuffled table is not, so the sorting path is tested too.
    assert not _chain_order(_shuffled(day_legs, 1))


def test_allocation_equals_the_plain_twin_in_both_orders(day_legs: pa.Table) -> None:
    expected = allocate_reference(day_legs)
    assert allocate(day_legs).tolist() == expected.tolist()
    order = np.random.default_rng(5).permutation(day_legs.num_rows)
    shuffled = day_legs.take(pa.array(order))
    assert allocate(shuffled).tolist() == expected[order].tolist()


def test_in_chain_order_sees_a_chain_split_or_reordered() -> None:
    """The order check itself: a chain interrupted by another, or legs out of boarding order."""
    day: np.ndarray = np.zeros(3, np.int32)
    iss: np.ndarray = np.ones(3, np.uint16)
    card: np.ndarray = np.array([1, 1, 1], np.uint64)
    ts: np.ndarray = np.array([1, 2, 3])
    seq: np.ndarray = np.array([0, 0, 0], np.int32)
    keys: list[np.ndarray] = [day, card, iss, np.array([0, 0, 1], np.int32)]
    assert _in_chain_order(keys, [ts, seq])
    assert not _in_chain_order([day, card, iss, np.array([0, 1, 0], np.int32)], [ts, seq])
    assert not _in_chain_order(keys, [np.array([2, 1, 3]), seq])
    assert not _in_chain_order([day, np.array([2, 1, 2], np.uint64), iss, keys[3]], [ts, seq])


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31 - 1), shuffle=st.booleans())
def test_settlement_of_a_generated_day_is_unchanged(seed: int, shuffle: bool) -> None:
    """Allocations, obligations, positions, payments and discount lines to the fen."""
    legs = _day_legs(seed)
    if shuffle:
        legs = _shuffled(legs, seed)
    allocated = allocate_reference(legs)
    obligations = obligations_reference(legs, allocated, TARIFFS, DAY)
    comp = compute_day(legs, TARIFFS, DAY)
    assert comp.allocated.tolist() == allocated.tolist()
    assert list(comp.obligations) == obligations
    assert day_obligations(legs, allocated, TARIFFS, DAY) == obligations
    positions = net_positions(obligations)
    assert comp.positions == positions
    assert list(comp.payments) == list(payment_instructions(positions, DAY))
    assert list(comp.discounts) == discount_lines(legs, TARIFFS, DAY)



@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31 - 1), group=st.sampled_from([1, 2, 5, 64, 997, 100_000]))
def test_settling_a_legs_file_by_row_groups_equals_the_whole_table(
    tmp_path_factory: pytest.TempPathFactory, seed: int, group: int
) -> None:
    """Per row group sums, the last card carried on, merged: the whole day's sums and figures."""
    legs = _day_legs(seed, 2000)
    path = tmp_path_factory.mktemp("legs") / "legs.parquet"
    pq.write_table(legs, path, row_group_size=group)
    assert pq.read_metadata(path).num_row_groups == -(-legs.num_rows // group)
    partials = legs_file_partials(path, DAY)
    assert partials == day_partials(legs, DAY)
    figures = partial_figures(partials, TARIFFS, DAY)
    comp = compute_day(legs, TARIFFS, DAY)
    assert figures.obligations == comp.obligations
    assert figures.positions == comp.positions
    assert figures.payments == comp.payments
    assert figures.city_summary == comp.city_summary
    assert figures.discounts == comp.discounts


def test_a_legs_file_out_of_card_order_is_not_summed_by_row_groups(
    day_legs: pa.Table, tmp_path: Path
) -> None:
    """A card whose legs are not consecutive could be split between groups: None, read whole."""
    path = tmp_path / "legs.parquet"
    pq.write_table(_shuffled(day_legs, 1), path, row_group_size=500)
    assert legs_file_partials(path, DAY) is None
    pq.write_table(day_legs.drop_columns(["chain"]), path)
    assert legs_file_partials(path, DAY) is None
    pq.write_table(day_legs, path, row_group_size=500)
    assert legs_file_partials(path, DAY) == day_partials(day_legs, DAY)
