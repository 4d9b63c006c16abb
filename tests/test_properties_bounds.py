"""SPEC §9, bounds: ``0 <= computed <= base`` off penalty legs; penalty legs compute ``max_fare``.

Checked on adversarial days under varied tariff sets. Each pricing step of SPEC §6 can only
lower the fare (a rate of 0..10000 bp, ``min(base, fixed)``, a transfer step, a cap), so the
steps are also checked to be monotone: base >= step 3 >= step 4 >= computed >= 0. The
penalty amount is looked up here from the tariff version in force, not from the leg.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings

from clearing.legs import NO_CHAIN, PENALTY_STATUSES
from clearing.reference import match_and_price
from clearing.service_day import day_from_number
from tariffs.load import TariffSet
from tongka.testing.strategies import tariffs_and_days

# Big generated days are the point: do not fail a run because one is slow or large to draw.
SLOW_OK = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example]
QA = settings(max_examples=200, deadline=None, suppress_health_check=SLOW_OK)


def _max_fare(tariffs: TariffSet, leg: dict) -> int:
    version = tariffs.version_for(leg["area"], day_from_number(leg["service_day"]))
    (fare,) = [nf.max_fare for nf in version.networks if nf.network == leg["network"]]
    return fare


@QA
@given(tariffs_and_days())
def test_computed_fares_stay_within_zero_and_base(drawn: tuple) -> None:
    tariffs, taps = drawn
    for leg in match_and_price(taps, tariffs).to_pylist():
        if leg["status"] in PENALTY_STATUSES:
            continue
        assert 0 <= leg["computed_fen"] <= leg["base_fen"], leg
        # Every step only lowers the fare (SPEC §6 steps 3-5).
        assert leg["base_fen"] >= leg["product_fare_fen"] >= leg["transfer_fare_fen"] \
            >= leg["computed_fen"] >= 0, leg


@QA
@given(tariffs_and_days())
def test_penalty_legs_compute_exactly_max_fare(drawn: tuple) -> None:
    tariffs, taps = drawn
    for leg in match_and_price(taps, tariffs).to_pylist():
        if leg["status"] not in PENALTY_STATUSES:
            continue
        assert leg["network"] != 0, leg  # SPEC §5: only entry-exit taps make penalty legs
        assert leg["computed_fen"] == _max_fare(tariffs, leg), leg
        # "nothing below applies": no discount, no chain, no transfer, no cap.
        assert leg["card_discount_fen"] == leg["transfer_discount_fen"] \
            == leg["cap_discount_fen"] == 0, leg
        assert leg["chain"] == NO_CHAIN and leg["transfer_no"] == 0, leg
