"""SPEC §7 apportionment: later_leg, pro_rata with the largest remainder, conservation per chain."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st
from test_settle_builders import chain_legs, day_legs, leg

from clearing.legs import NO_CHAIN, Apportionment, Leg, legs_table
from settlement.apportion import allocate, allocate_chain

PRO, LATER = Apportionment.PRO_RATA, Apportionment.LATER_LEG


def _alloc(legs: list[Leg]) -> list[int]:
    return allocate(legs_table(legs)).tolist()


# ---- worked by hand ------------------------------------------------------------------------


def test_pro_rata_three_legs_by_hand() -> None:
    # R = 160 + 0 + 180 = 340, bases 200 + 200 + 300 = 700.
    # 340*200/700 = 97 rem 100 (twice); 340*300/700 = 145 rem 500; 339 allocated, 1 fen left:
    # the largest remainder (500) is the third leg's.
    assert _alloc(chain_legs([160, 0, 180], [200, 200, 300], PRO)) == [97, 97, 146]


def test_pro_rata_tie_goes_to_the_earlier_leg() -> None:
    # R = 100 over equal bases: 33 rem 100 each, one fen left -> the first leg.
    assert _alloc(chain_legs([100, 0, 0], [100, 100, 100], PRO)) == [34, 33, 33]
    # R = 200 over equal bases: 66 rem 2 each, two fen left -> the first two legs.
    assert _alloc(chain_legs([0, 0, 200], [1, 1, 1], PRO)) == [67, 67, 66]


def test_pro_rata_ties_follow_leg_order_not_row_order() -> None:
    legs = chain_legs([100, 0, 0], [100, 100, 100], PRO)
    shuffled = [legs[2], legs[0], legs[1]]
    assert _alloc(shuffled) == [33, 34, 33]


def test_pro_rata_two_legs_bus_metro() -> None:
    # 扣高免低 chain: bus 160 then metro charged 110 more (270 total); bases 200 and 300.
    # 270*200/500 = 108 exactly, 270*300/500 = 162 exactly: no remainder to place.
    assert _alloc(chain_legs([160, 110], [200, 300], PRO)) == [108, 162]


def test_zero_base_keeps_charged() -> None:
    assert _alloc(chain_legs([0, 50], [0, 0], PRO)) == [0, 50]


def test_later_leg_keeps_charged() -> None:
    assert _alloc(chain_legs([160, 0, 180], [200, 200, 300], LATER)) == [160, 0, 180]


def test_chain_mode_is_its_first_legs() -> None:
    legs = chain_legs([160, 0, 180], [200, 200, 300], PRO)
    first_later = [leg_with(legs[0], apportionment=int(LATER)), *legs[1:]]
    assert _alloc(first_later) == [160, 0, 180]
    later_first_pro = [*legs[:1], *(leg_with(x, apportionment=int(LATER)) for x in legs[1:])]
    assert _alloc(later_first_pro) == [97, 97, 146]


def test_penalty_and_single_legs_keep_charged() -> None:
    legs = [
        leg(chain=NO_CHAIN, charged_fen=1200, base_fen=1200, card_id=7),
        leg(chain=0, charged_fen=123, base_fen=200, card_id=8),
        # two penalty legs of one card are not one chain
        leg(chain=NO_CHAIN, charged_fen=0, base_fen=1200, card_id=9, board_card_seq=1),
        leg(chain=NO_CHAIN, charged_fen=1200, base_fen=1200, card_id=9, board_card_seq=2),
    ]
    assert _alloc(legs) == [1200, 123, 0, 1200]


def test_chains_are_per_card_and_issuer() -> None:
    # Same card_id and chain ordinal but another issuer: another card (SPEC §3), another chain.
    a = chain_legs([100, 0], [100, 100], PRO, issuer=1)
    b = chain_legs([0, 100], [100, 300], PRO, issuer=2)
    assert _alloc(a + b) == [50, 50, 25, 75]


def test_empty_table() -> None:
    assert allocate(legs_table([])).dtype == np.int64
    assert allocate(legs_table([])).size == 0


def leg_with(x: Leg, **fields: int) -> Leg:
    import dataclasses

    return dataclasses.replace(x, **fields)


# ---- properties ----------------------------------------------------------------------------


@st.composite
def chain_inputs(draw: st.DrawFn) -> tuple[list[int], list[int]]:
    n = draw(st.integers(1, 5))
    charged = draw(st.lists(st.integers(0, 3000), min_size=n, max_size=n))
    base = draw(st.lists(st.integers(0, 1500), min_size=n, max_size=n))
    return charged, base


@given(chain_inputs())
def test_twin_conserves_and_stays_near_the_exact_share(inputs: tuple[list[int], list[int]]) -> None:
    charged, base = inputs
    out = allocate_chain(charged, base, PRO)
    assert sum(out) == sum(charged)
    if len(base) > 1 and sum(base) > 0:
        for o, b in zip(out, base, strict=True):
            # each share is its exact value rounded down, or up by the one leftover fen
            exact_num = sum(charged) * b
            assert o * sum(base) - exact_num in range(-sum(base) + 1, sum(base))
            assert o >= 0


@given(day_legs(max_cards=6), st.randoms(use_true_random=False))
@settings(max_examples=150)
def test_allocate_equals_its_twin_and_conserves(legs: list[Leg], rnd) -> None:  # type: ignore[no-untyped-def]
    rnd.shuffle(legs)
    table = legs_table(legs)
    got = allocate(table)
    assert got.dtype == np.int64 and got.shape == (len(legs),)
    # Conservation: per chain and per day, allocated sums to charged (SPEC §9).
    assert int(got.sum()) == sum(x.charged_fen for x in legs)
    chains: dict[tuple[int, int, int, int], list[int]] = defaultdict(list)
    for i, x in enumerate(legs):
        if x.chain == NO_CHAIN:
            assert got[i] == x.charged_fen
        else:
            chains[(x.service_day, x.card_id, x.issuer, x.chain)].append(i)
    for rows in chains.values():
        rows.sort(key=lambda i: (legs[i].board_ts_ms, legs[i].board_card_seq))
        expected = allocate_chain(
            [legs[i].charged_fen for i in rows],
            [legs[i].base_fen for i in rows],
            legs[rows[0]].apportionment,
        )
        assert [int(got[i]) for i in rows] == expected
        assert sum(int(got[i]) for i in rows) == sum(legs[i].charged_fen for i in rows)


def test_allocate_accepts_any_row_order_of_a_large_table() -> None:
    # Many identical-looking chains of many cards: grouping must not mix cards.
    rng = np.random.default_rng(7)
    n_cards = 2000
    legs = []
    for card in range(1, n_cards + 1):
        legs += chain_legs(
            [int(c) for c in rng.integers(0, 400, 3)],
            [int(b) for b in rng.integers(1, 400, 3)],
            PRO,
            card_id=card,
        )
    table = legs_table(legs)
    perm = rng.permutation(len(legs))
    got = allocate(table.take(pa.array(perm)))
    want = allocate(table)[perm]
    assert got.tolist() == want.tolist()
