"""SPEC §9, money is conserved: allocations sum to charged; discounts sum to base minus computed.

Per leg, the discount components of SPEC §6 (``card_discount + transfer_discount +
cap_discount``) account for every fen between the base fare and the computed fare. Per day,
SPEC §7's allocated revenue sums to the charged amounts, chain by chain. Per day, the money
the readers took (every non-negative debit of every tap) is exactly what the stored-value and
mixed legs are charged, since each tap belongs to exactly one leg (SPEC §5); account-based
legs are charged what they compute. Net positions and the ledger are the settlement tests'.
"""

from __future__ import annotations

from collections import defaultdict

from hypothesis import HealthCheck, given, settings

from clearing.legs import NO_CHAIN, PENALTY_STATUSES, DebitKind, LegStatus
from clearing.reference import match_and_price
from settlement.apportion import allocate
from tongka.testing.strategies import tariffs_and_days

# Big generated days are the point: do not fail a run because one is slow or large to draw.
SLOW_OK = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example]
QA = settings(max_examples=200, deadline=None, suppress_health_check=SLOW_OK)


@QA
@given(tariffs_and_days())
def test_discount_components_account_for_base_minus_computed(drawn: tuple) -> None:
    tariffs, taps = drawn
    for leg in match_and_price(taps, tariffs).to_pylist():
        discounts = leg["card_discount_fen"] + leg["transfer_discount_fen"] \
            + leg["cap_discount_fen"]
        if leg["status"] not in PENALTY_STATUSES:
            assert discounts == leg["base_fen"] - leg["computed_fen"], leg
            assert min(leg["card_discount_fen"], leg["transfer_discount_fen"],
                       leg["cap_discount_fen"]) >= 0, leg
        assert leg["mismatch_fen"] == leg["charged_fen"] - leg["computed_fen"], leg


@QA
@given(tariffs_and_days())
def test_allocations_sum_to_charged_per_chain_and_per_day(drawn: tuple) -> None:
    tariffs, taps = drawn
    legs = match_and_price(taps, tariffs)
    allocated = allocate(legs)
    rows = legs.to_pylist()
    assert len(allocated) == len(rows)
    assert int(allocated.sum()) == sum(leg["charged_fen"] for leg in rows)
    per_chain: dict[tuple, list[int]] = defaultdict(lambda: [0, 0])
    for leg, alloc in zip(rows, allocated.tolist(), strict=True):
        if leg["chain"] == NO_CHAIN:
            assert alloc == leg["charged_fen"], leg  # SPEC §7: in no chain, keeps its own
            continue
        key = (leg["service_day"], leg["issuer"], leg["card_id"], leg["chain"])
        per_chain[key][0] += alloc
        per_chain[key][1] += leg["charged_fen"]
    for key, (alloc_sum, charged_sum) in per_chain.items():
        assert alloc_sum == charged_sum, key


@QA
@given(tariffs_and_days())
def test_every_fen_the_readers_took_is_charged_to_exactly_one_leg(drawn: tuple) -> None:
    tariffs, taps = drawn
    legs = match_and_price(taps, tariffs).to_pylist()
    taken = sum(d for d in taps["debited_fen"].to_pylist() if d >= 0)
    by_readers = sum(leg["charged_fen"] for leg in legs if leg["debit_kind"] != DebitKind.ACCOUNT)
    assert by_readers == taken
    for leg in legs:
        if leg["debit_kind"] == DebitKind.ACCOUNT:
            assert leg["charged_fen"] == leg["computed_fen"], leg
    # Each tap is in exactly one leg: legs with an EXIT hold two taps, the others one.
    two_taps = sum(leg["status"] in (LegStatus.COMPLETE, LegStatus.OVERTIME) for leg in legs)
    assert len(legs) + two_taps == taps.num_rows
