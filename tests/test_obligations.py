"""SPEC §8 obligations: revenue follows the money charged, fees per (issuer, operator) pair on the
day's total, subsidies follow the computed components the tariff says the government funds."""

from __future__ import annotations

from collections import defaultdict

import pytest
from hypothesis import given, settings
from test_settle_builders import DAY, TARIFFS, day_legs, leg

from clearing.legs import Leg, legs_table
from clearing.service_day import day_number
from settlement.apportion import allocate
from settlement.obligations import (
    Component,
    Obligation,
    ObligationKind,
    day_obligations,
    discount_lines,
    fee_fen,
    funder_of,
    merge_obligations,
)
from settlement.parties import CENTRE, government, issuer, operator
from tariffs.load import TariffSet
from tariffs.vocab import Product

REV, FEE, SUB = ObligationKind.REVENUE, ObligationKind.FEE, ObligationKind.SUBSIDY


def _obligations(legs: list[Leg], tariffs: TariffSet = TARIFFS) -> list[Obligation]:
    table = legs_table(legs)
    return day_obligations(table, allocate(table), tariffs, DAY)


def test_fee_rounds_half_up_to_the_fen() -> None:
    assert fee_fen(125, 40) == 1  # 0.5 fen rounds up
    assert fee_fen(124, 40) == 0  # 0.496 fen rounds down
    assert fee_fen(470, 80) == 4  # 3.76
    assert fee_fen(0, 80) == 0
    assert fee_fen(10_000, 10_000) == 10_000


def test_fee_is_rounded_once_per_pair_on_the_days_total() -> None:
    # A Wuhan Tong card on Huangshi buses (operator 201, contract 80 bp with issuer 1).
    assert TARIFFS.fee_bp(201, 1) == 80
    hs = dict(area=420200, operator=201, version=_version_no(420200), apportionment=0)
    legs = [
        leg(card_id=1, charged_fen=160, **hs),
        leg(card_id=2, charged_fen=160, **hs),
        leg(card_id=3, charged_fen=150, **hs),
    ]
    obs = _obligations(legs)
    # 470 fen of revenue -> 3.76 fen -> 4; rounding per leg would have given 1 + 1 + 1 = 3.
    assert Obligation(issuer(1), operator(201), REV, 470) in obs
    assert Obligation(operator(201), CENTRE, FEE, 4) in obs


def test_own_issuer_rides_pay_no_fee() -> None:
    hs = dict(area=420200, operator=201, version=_version_no(420200), apportionment=0)
    obs = _obligations([leg(issuer=2, charged_fen=160, **hs)])
    assert [o.kind for o in obs] == [REV]


def test_government_funds_the_components_its_tariff_names() -> None:
    # Wuhan funders: student card discount and transfer by the government, the cap by the operator.
    student = leg(
        product=1,
        honoured_product=int(Product.STUDENT),
        base_fen=300,
        product_fare_fen=240,
        card_discount_fen=60,
        transfer_fare_fen=140,
        transfer_discount_fen=100,
        computed_fen=110,
        cap_discount_fen=30,
        charged_fen=300,
        mismatch_fen=190,
    )
    obs = _obligations([student])
    # Subsidies follow the computed components (60 + 100), revenue the money charged (300).
    assert Obligation(government(420100), operator(101), SUB, 160) in obs
    assert Obligation(issuer(1), operator(101), REV, 300) in obs
    assert sum(o.amount_fen for o in obs if o.kind == SUB) == 160


def test_ordinary_discount_is_the_operators_unless_the_tariff_says_otherwise() -> None:
    ordinary = leg(issuer=20, card_discount_fen=40)  # a T-Union card, honoured as ORDINARY
    assert [o.kind for o in _obligations([ordinary])] == [REV, FEE]
    wuhan = TARIFFS.tariffs[420100]
    funded = wuhan.model_copy(
        update={
            "versions": [
                v.model_copy(
                    update={
                        "funders": v.funders.model_copy(
                            update={"card": {**v.funders.card, "ordinary": "government"}}
                        )
                    }
                )
                for v in wuhan.versions
            ]
        }
    )
    tariffs = TariffSet(TARIFFS.registry, {**TARIFFS.tariffs, 420100: funded}, TARIFFS.contracts)
    # The visitor or accepted-issuer ordinary discount is ORDINARY's, now the government's.
    assert Obligation(government(420100), operator(101), SUB, 40) in _obligations(
        [ordinary], tariffs
    )


def test_legs_of_another_day_are_refused() -> None:
    with pytest.raises(ValueError, match="other service days"):
        _obligations([leg(), leg(service_day=day_number(DAY) + 1)])


def test_discount_lines_name_each_components_funder() -> None:
    senior = leg(
        product=2,
        honoured_product=2,
        card_discount_fen=200,
        computed_fen=0,
        charged_fen=0,
        product_fare_fen=0,
        transfer_fare_fen=0,
    )
    capped = leg(
        card_id=9, card_discount_fen=40, cap_discount_fen=20, computed_fen=140, charged_fen=140
    )
    lines = discount_lines(legs_table([senior, capped]), TARIFFS, DAY)
    got = {(ln.component, ln.honoured_product, ln.funder): ln.amount_fen for ln in lines}
    assert got == {
        (Component.CARD, int(Product.ORDINARY), "operator"): 40,
        (Component.CARD, int(Product.SENIOR), "government"): 200,
        (Component.CAP, int(Product.ORDINARY), "operator"): 20,
    }


@given(day_legs(max_cards=6))
@settings(max_examples=120, deadline=None)
def test_obligations_equal_a_leg_by_leg_recount(legs: list[Leg]) -> None:
    table = legs_table(legs)
    allocated = allocate(table)
    obs = day_obligations(table, allocated, TARIFFS, DAY)
    assert all(o.amount_fen > 0 for o in obs)
    assert len({(o.debtor, o.creditor, o.kind) for o in obs}) == len(obs)

    # The plain recount: one leg at a time, the version looked up by area and day.
    revenue: dict[tuple[int, int], int] = defaultdict(int)
    subsidy: dict[tuple[int, int], int] = defaultdict(int)
    for x, a in zip(legs, allocated.tolist(), strict=True):
        revenue[(x.issuer, x.operator)] += a
        version = TARIFFS.version_for(x.area, DAY)
        for comp, amount in (
            (Component.CARD, x.card_discount_fen),
            (Component.TRANSFER, x.transfer_discount_fen),
            (Component.CAP, x.cap_discount_fen),
        ):
            if funder_of(version, comp, x.honoured_product) == "government":
                subsidy[(x.area, x.operator)] += amount
    fees: dict[int, int] = defaultdict(int)
    for (iss, opr), amount in revenue.items():
        fees[opr] += (amount * TARIFFS.fee_bp(opr, iss) + 5000) // 10000  # SPEC §8 as written

    want = [Obligation(issuer(i), operator(o), REV, a) for (i, o), a in revenue.items()]
    want += [Obligation(operator(o), CENTRE, FEE, f) for o, f in fees.items()]
    want += [Obligation(government(c), operator(o), SUB, s) for (c, o), s in subsidy.items()]
    assert obs == sorted(w for w in want if w.amount_fen)
    assert sum(o.amount_fen for o in obs if o.kind == REV) == sum(x.charged_fen for x in legs)


@given(day_legs(max_cards=6))
@settings(max_examples=50, deadline=None)
def test_partitions_by_card_merge_to_the_whole(legs: list[Leg]) -> None:
    # ARCHITECTURE "Scale": partial obligations of card partitions sum to the day's, except that
    # fees round per pair on the day's total, so partitions carry revenue and subsidy only.
    whole = [o for o in _obligations(legs) if o.kind != FEE]
    halves = [[x for x in legs if x.card_id % 2 == r] for r in (0, 1)]
    parts = [[o for o in _obligations(h) if o.kind != FEE] for h in halves]
    assert merge_obligations(parts) == whole


def _version_no(area: int) -> int:
    return day_number(TARIFFS.version_for(area, DAY).valid_from)


def test_legs_priced_by_a_version_the_tariffs_lack_stop_settlement() -> None:
    from clearing.errors import StateError

    with pytest.raises(StateError, match="clear 2024-05-14 again") as err:
        _obligations([leg(version=day_number(DAY) - 3)])
    assert err.value.code == "SETTLEMENT_STALE_LEGS"
