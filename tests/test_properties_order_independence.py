"""SPEC §9, order does not matter: shuffled taps, or a day split into batches, price the same.

The engine receives a day's accepted taps in whatever order the batches arrived and the rows
were written. Matching orders each card-day by ``(ts_ms, card_seq)`` (SPEC §5), so any order
of the rows, and any split into batches concatenated in any order, must give the same legs,
field by field. The drawn days have no two taps under one duplicate key, as SPEC §9 requires.
"""

from __future__ import annotations

import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clearing.legs import sort_legs
from clearing.reference import match_and_price
from tongka.testing.strategies import batches, shuffled, tariffs_and_days

# Big generated days are the point: do not fail a run because one is slow or large to draw.
SLOW_OK = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example]
QA = settings(max_examples=200, deadline=None, suppress_health_check=SLOW_OK)


@QA
@given(st.data())
def test_shuffling_the_taps_changes_no_leg(data: st.DataObject) -> None:
    tariffs, taps = data.draw(tariffs_and_days())
    again = data.draw(shuffled(taps))
    assert match_and_price(again, tariffs).equals(match_and_price(taps, tariffs))


@QA
@given(st.data())
def test_any_split_into_batches_in_any_order_changes_no_leg(data: st.DataObject) -> None:
    tariffs, taps = data.draw(tariffs_and_days())
    parts = data.draw(batches(taps))
    joined = pa.concat_tables(parts)
    assert joined.num_rows == taps.num_rows
    assert match_and_price(joined, tariffs).equals(match_and_price(taps, tariffs))


@QA
@given(st.data())
def test_cards_are_priced_independently(data: st.DataObject) -> None:
    """A day's legs are the union of each card's legs priced alone (ARCHITECTURE: scale)."""
    tariffs, taps = data.draw(tariffs_and_days(max_cards=4))
    whole = match_and_price(taps, tariffs)
    cards = sorted(set(zip(taps["issuer"].to_pylist(), taps["card_id"].to_pylist(), strict=True)))
    alone = []
    for issuer, card_id in cards:
        mask = [i == issuer and c == card_id for i, c in
                zip(taps["issuer"].to_pylist(), taps["card_id"].to_pylist(), strict=True)]
        alone.append(match_and_price(taps.filter(pa.array(mask)), tariffs))
    assert sort_legs(pa.concat_tables(alone)).equals(whole)
