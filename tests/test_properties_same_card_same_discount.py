"""SPEC §9, same card, same discount: any accepted card pays what the host city's own card pays.

For a journey in city C, a card of any accepted issuer, on any medium, pays exactly what C's
own card of the same honoured product pays (SPEC §6.3). The test keeps a card-day's taps and
swaps the card: the issuer becomes C's own issuer, the product becomes the honoured product
the first card got in C, the medium and the card id are drawn afresh. Every leg in C must
then be priced identically, step by step. Legs in other areas are priced by other tariffs,
but they cannot change C's legs: a leg in another area ends a chain and caps are per area.
"""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clearing.legs import PENALTY_STATUSES
from clearing.reference import match_and_price
from clearing.service_day import service_day_of
from tariffs.load import TariffSet, load_tariff_set
from tariffs.vocab import Media, Product
from tongka.testing.strategies import card_days, card_ids, recard, service_days, tariff_sets, world

# Big generated days are the point: do not fail a run because one is slow or large to draw.
SLOW_OK = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example]
QA = settings(max_examples=200, deadline=None, suppress_health_check=SLOW_OK)

# The pricing of a leg, step by step (SPEC §6): these must not depend on who issued the card.
PRICED = ("status", "area", "chain", "transfer_no", "base_fen", "product_fare_fen",
          "transfer_fare_fen", "computed_fen", "card_discount_fen", "transfer_discount_fen",
          "cap_discount_fen")


def _legs_in(legs: pa.Table, area: int) -> list[dict]:
    return [leg for leg in legs.to_pylist() if leg["area"] == area]


def _assert_same_pricing(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert {k: x[k] for k in PRICED} == {k: y[k] for k in PRICED}, (x, y)
        if x["status"] not in PENALTY_STATUSES:
            assert x["honoured_product"] == y["honoured_product"], (x, y)


@st.composite
def _accepted_card_day(draw: st.DrawFn, tariffs: TariffSet) -> tuple[pa.Table, dt.date]:
    """A card-day whose issuer the home area's tariff accepts (any other medium, product)."""
    w = world(tariffs.registry)
    day = draw(service_days(tariffs))
    home = draw(st.sampled_from(w.areas))
    accepted = tariffs.version_for(home, day).accepted_issuers
    taps = draw(card_days(tariffs, day, area=home, issuer=draw(st.sampled_from(accepted))))
    return taps, day


@QA
@given(st.data())
def test_an_accepted_card_pays_what_the_host_citys_own_card_pays(data: st.DataObject) -> None:
    tariffs = data.draw(st.one_of(st.just(load_tariff_set()), tariff_sets()), label="tariffs")
    taps, day = data.draw(_accepted_card_day(tariffs))
    legs = match_and_price(taps, tariffs)
    issuer = taps["issuer"][0].as_py()
    reg = tariffs.registry
    for area in sorted(set(legs["area"].to_pylist())):
        version = tariffs.version_for(area, day)
        if issuer not in version.accepted_issuers:
            continue  # a visitor in this area: the property is about accepted cards
        honoured = taps["product"][0].as_py() if issuer in version.concession_issuers \
            else int(Product.ORDINARY)
        own = data.draw(st.sampled_from(reg.own_issuers(area)), label=f"own issuer of {area}")
        twin = recard(taps, issuer=own, product=honoured,
                      media=int(data.draw(st.sampled_from(Media), label="medium")),
                      card_id=data.draw(card_ids(), label="card id"))
        _assert_same_pricing(_legs_in(legs, area), _legs_in(match_and_price(twin, tariffs), area))


@QA
@given(st.data())
def test_a_wuhan_tong_card_pays_what_a_local_card_pays_in_every_partner_city(
        data: st.DataObject) -> None:
    """The headline case: Wuhan Tong (issuer 1) in a partner city vs that city's own card."""
    tariffs = load_tariff_set()
    reg = tariffs.registry
    area = data.draw(st.sampled_from([c for c in sorted(reg.cities) if c != 420100]))
    taps = data.draw(card_days(tariffs, area=area, issuer=1))
    day = service_day_of(taps["ts_ms"][0].as_py())
    honoured = int(Product.ORDINARY)  # the default tariffs honour concessions of own cards only
    assert 1 not in tariffs.version_for(area, day).concession_issuers
    local = recard(taps, issuer=min(reg.own_issuers(area)), product=honoured,
                   media=int(data.draw(st.sampled_from(Media))))
    _assert_same_pricing(_legs_in(match_and_price(taps, tariffs), area),
                         _legs_in(match_and_price(local, tariffs), area))
