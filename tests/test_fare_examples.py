"""The hand-worked fare examples of docs/fare-examples.md, one test each (SPEC §1, §5-§6).

Each test is the example's tap script and the fen the document works out by hand at every
pricing step: base (step 1), product fare (steps 2-3), transfer fare (step 4), computed fare
(step 5), and the charge. The discount components are checked as the differences of those
hand numbers. The numbers are the document's, never read back from the engine; test names
carry the example's number, and a test below keeps the document and this file in step.
"""

from __future__ import annotations

import datetime as dt
import itertools
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from clearing.legs import PENALTY_STATUSES, DebitKind, LegStatus
from clearing.reference import match_and_price
from clearing.service_day import day_number, local_ms
from clearing.taps import ACCOUNT_BASED, TapType, taps_table
from tariffs.load import TariffSet, load_tariff_set
from tariffs.registry import load_registry
from tariffs.vocab import Media, Product

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "fare-examples.md"
QA_TARIFFS = Path(__file__).resolve().parent / "fixtures" / "tariffs_qa"

DAY = dt.date(2021, 3, 15)  # a Monday under Wuhan's 2020 version and every city's tariff
DAY_2016 = dt.date(2019, 6, 10)  # a Monday under Wuhan's 2016 version

# Operators, lines and stops of the registry the examples ride.
WUHAN_BUS, WUHAN_METRO, WUHAN_FERRY = 101, 102, 103
HUANGSHI_BUS, EZHOU_BUS, EZHOU_COACH, XIAOGAN_BUS, XIANNING_BUS = 201, 301, 302, 401, 601
HANKOU_NORTH, TENGZIGANG, DANSHUICHI, ERQI_ROAD = 100001, 100003, 100006, 100008  # Line 1
# Band-edge pairs of the 13-line network (issue #15: metres along the track).
JINGHE, HANXI_1ST_ROAD = 100032, 100020  # Line 1
JIANSHE_2ND_ROAD, ZHANGJIAWAN = 100152, 100164  # Line 5
HANZHENG_STREET = 100182  # Line 6
XIAODONGMEN, BANQIAO = 100204, 100208  # Line 7
BAIBUTINGHUAYUAN_ROAD = 100271  # Yangluo Line (21)
EZHOU_STATION, GEDIAN = 310001, 310003  # Ezhou-Wuhan intercity coach

# Issuers.
WUHAN_TONG, HUANGSHI_TONG, EZHOU_TONG, XIAOGAN_TONG, XIANNING_TONG, CLOSED_LOOP = 1, 2, 3, 4, 6, 30


@cache
def qa_set() -> TariffSet:
    """The examples' tariffs: a frozen snapshot of the default set with two marked changes."""
    return load_tariff_set(QA_TARIFFS, load_registry())


def at(hour: int, minute: int = 0, second: int = 0, ms: int = 0, day: dt.date = DAY) -> int:
    """UTC ms of a local (UTC+8) wall-clock time on a calendar date."""
    return local_ms(day, hour, minute, second, ms)


_card_ids = itertools.count(880_000_001)
_device_seq = itertools.count(1)


@dataclass
class Card:
    """One card and the taps it makes, in the order written (card_seq counts up)."""

    issuer: int = WUHAN_TONG
    product: Product = Product.ORDINARY
    media: Media = Media.CARD
    card_id: int = field(default_factory=lambda: next(_card_ids))
    taps: list[dict[str, Any]] = field(default_factory=list)
    seq: int = 100

    def tap(self, ts: int, operator: int, line: int, stop: int, kind: TapType,
            debit: int = ACCOUNT_BASED, seq: int | None = None) -> Card:
        reg = load_registry()
        city = reg.stops[stop].city if stop else reg.operators[operator].city
        self.seq += 1
        self.taps.append(dict(
            operator=operator, device_id=7000 + line, device_seq=next(_device_seq),
            card_id=self.card_id, card_seq=self.seq if seq is None else seq,
            issuer=self.issuer, product=int(self.product), media=int(self.media), ts_ms=ts,
            city=city, line=line, stop=stop, tap_type=int(kind), debited_fen=debit))
        return self

    def bus(self, ts: int, operator: int = WUHAN_BUS, line: int = 1, stop: int = 0,
            debit: int = ACCOUNT_BASED) -> Card:
        return self.tap(ts, operator, line, stop, TapType.FLAT, debit)

    def metro(self, entry_ts: int, entry_stop: int, exit_ts: int, exit_stop: int,
              line: int = 1, exit_line: int | None = None) -> Card:
        self.tap(entry_ts, WUHAN_METRO, line, entry_stop, TapType.ENTRY)
        return self.tap(exit_ts, WUHAN_METRO, exit_line or line, exit_stop, TapType.EXIT)


@dataclass(frozen=True)
class Fen:
    """A non-penalty leg as the document works it out: the fare after each step."""

    status: LegStatus
    base: int  # step 1
    product: int  # steps 2-3
    transfer: int  # step 4
    computed: int  # step 5
    charged: int | None = None  # default: account-based, charged = computed
    honoured: Product | None = None
    chain: int | None = None
    transfer_no: int | None = None
    debit_kind: DebitKind | None = None


@dataclass(frozen=True)
class Penalty:
    """A penalty leg: exactly max_fare, nothing else applies (SPEC §6.1)."""

    status: LegStatus
    max_fare: int
    charged: int | None = None
    debit_kind: DebitKind | None = None


def priced(card: Card, tariffs: TariffSet | None = None) -> list[dict[str, Any]]:
    return match_and_price(taps_table(card.taps), tariffs or qa_set()).to_pylist()


def check(card: Card, expected: list[Fen | Penalty], tariffs: TariffSet | None = None) -> list:
    """Price the card's taps and compare every leg with the hand-worked numbers."""
    legs = priced(card, tariffs)
    assert [leg["status"] for leg in legs] == [e.status for e in expected]
    for leg, e in zip(legs, expected, strict=True):
        if isinstance(e, Penalty):
            assert leg["status"] in PENALTY_STATUSES
            steps = (e.max_fare, e.max_fare, e.max_fare, e.max_fare, 0, 0, 0)
            charged = e.max_fare if e.charged is None else e.charged
            computed = e.max_fare
        else:
            steps = (e.base, e.product, e.transfer, e.computed, e.base - e.product,
                     e.product - e.transfer, e.transfer - e.computed)
            charged = e.computed if e.charged is None else e.charged
            computed = e.computed
            for name, want in (("honoured_product", e.honoured), ("chain", e.chain),
                               ("transfer_no", e.transfer_no)):
                if want is not None:
                    assert leg[name] == want, (name, leg)
        got = (leg["base_fen"], leg["product_fare_fen"], leg["transfer_fare_fen"],
               leg["computed_fen"], leg["card_discount_fen"], leg["transfer_discount_fen"],
               leg["cap_discount_fen"])
        assert got == steps, leg
        assert (leg["charged_fen"], leg["mismatch_fen"]) == (charged, charged - computed), leg
        if e.debit_kind is not None:
            assert leg["debit_kind"] == e.debit_kind, leg
    return legs


F, C = LegStatus.FLAT, LegStatus.COMPLETE


# --- Steps 1-3: base fare, honoured product, product price ------------------------------------


def test_e01_flat_bus_wuhan_tong_200_to_160() -> None:
    check(Card().bus(at(8)), [Fen(F, 200, 160, 160, 160, honoured=Product.ORDINARY)])


def test_e02_no_price_for_the_product_uses_the_ordinary_price() -> None:
    card = Card(product=Product.STUDENT).tap(at(8), WUHAN_FERRY, 1, 120001, TapType.FLAT)
    check(card, [Fen(F, 150, 120, 120, 120, honoured=Product.STUDENT)])


def test_e03_rounding_half_up() -> None:
    card = Card(issuer=XIANNING_TONG).bus(at(8), XIANNING_BUS)
    check(card, [Fen(F, 150, 128, 128, 128)])


def test_e04_huangshi_student_fixed_70() -> None:
    card = Card(issuer=HUANGSHI_TONG, product=Product.STUDENT).bus(at(8), HUANGSHI_BUS)
    check(card, [Fen(F, 200, 70, 70, 70, honoured=Product.STUDENT)])


def test_e05_concession_honoured_at_home_not_in_another_city() -> None:
    visitor_in_huangshi = Card(issuer=WUHAN_TONG, product=Product.STUDENT).bus(at(8), HUANGSHI_BUS)
    check(visitor_in_huangshi, [Fen(F, 200, 160, 160, 160, honoured=Product.ORDINARY)])
    huangshi_student_on_wuhan_metro = Card(issuer=HUANGSHI_TONG, product=Product.STUDENT)
    huangshi_student_on_wuhan_metro.metro(at(8), HANKOU_NORTH, at(8, 20), TENGZIGANG)
    check(huangshi_student_on_wuhan_metro, [Fen(C, 300, 270, 270, 270, honoured=Product.ORDINARY)])
    wuhan_student = Card(issuer=WUHAN_TONG, product=Product.STUDENT)
    wuhan_student.metro(at(8), HANKOU_NORTH, at(8, 20), TENGZIGANG)
    check(wuhan_student, [Fen(C, 300, 210, 210, 210, honoured=Product.STUDENT)])


def test_e06_visitor_rate_and_a_transfer_for_a_visitor() -> None:
    card = Card(issuer=CLOSED_LOOP, product=Product.SENIOR).bus(at(8)).bus(at(8, 20), line=2)
    check(card, [Fen(F, 200, 200, 200, 200, honoured=Product.ORDINARY, chain=0, transfer_no=0),
                 Fen(F, 200, 200, 0, 0, honoured=Product.ORDINARY, chain=0, transfer_no=1)])


def test_e07_distance_band_edge_is_inclusive() -> None:
    at_8000 = Card().metro(at(8), XIAODONGMEN, at(8, 20), BANQIAO, line=7)
    check(at_8000, [Fen(C, 300, 270, 270, 270)])
    at_32000 = Card().metro(at(8), JINGHE, at(9, 5), JIANSHE_2ND_ROAD, line=1, exit_line=5)
    check(at_32000, [Fen(C, 700, 630, 630, 630)])


def test_e08_one_metre_past_a_band_edge() -> None:
    at_12001 = Card().metro(at(8), HANZHENG_STREET, at(8, 40), BAIBUTINGHUAYUAN_ROAD, line=6,
                            exit_line=21)
    check(at_12001, [Fen(C, 500, 450, 450, 450)])
    at_18001 = Card().metro(at(8), HANXI_1ST_ROAD, at(8, 50), ZHANGJIAWAN, line=1, exit_line=5)
    check(at_18001, [Fen(C, 600, 540, 540, 540)])


def test_e09_directional_stop_to_stop_matrix() -> None:
    card = Card(issuer=EZHOU_TONG)
    card.tap(at(8), EZHOU_COACH, 1, EZHOU_STATION, TapType.ENTRY)
    card.tap(at(8, 40), EZHOU_COACH, 1, GEDIAN, TapType.EXIT)
    card.tap(at(17), EZHOU_COACH, 1, GEDIAN, TapType.ENTRY)
    card.tap(at(17, 40), EZHOU_COACH, 1, EZHOU_STATION, TapType.EXIT)
    check(card, [Fen(C, 600, 570, 570, 570), Fen(C, 550, 523, 523, 523)])


def test_e10_same_station_exit() -> None:
    card = Card().metro(at(8), HANKOU_NORTH, at(8, 20), HANKOU_NORTH)
    check(card, [Fen(C, 200, 180, 180, 180)])


# --- SPEC §5: matching, penalty legs -----------------------------------------------------------


def test_e11_journey_of_exactly_max_journey_minutes_is_complete() -> None:
    card = Card().metro(at(8), HANKOU_NORTH, at(12), TENGZIGANG)
    check(card, [Fen(C, 300, 270, 270, 270)])


def test_e12_one_ms_past_max_journey_minutes_is_overtime() -> None:
    card = Card().metro(at(8), HANKOU_NORTH, at(12, 0, 0, 1), TENGZIGANG)
    check(card, [Penalty(LegStatus.OVERTIME, 1200)])


def test_e13_incomplete_stored_value_entry_debited_zero() -> None:
    card = Card().tap(at(8), WUHAN_METRO, 1, HANKOU_NORTH, TapType.ENTRY, debit=0)
    check(card, [Penalty(LegStatus.INCOMPLETE, 1200, charged=0,
                         debit_kind=DebitKind.STORED_VALUE)])


def test_e14_entry_on_one_network_exit_on_another() -> None:
    card = Card()
    card.tap(at(8), WUHAN_METRO, 11, 100125, TapType.ENTRY)
    card.tap(at(8, 40), EZHOU_COACH, 1, GEDIAN, TapType.EXIT)
    check(card, [Penalty(LegStatus.INCOMPLETE, 1200), Penalty(LegStatus.ORPHAN_EXIT, 1500)])


def test_e15_same_millisecond_taps_are_ordered_by_card_seq() -> None:
    exit_first = Card()
    exit_first.tap(at(8), WUHAN_METRO, 1, HANKOU_NORTH, TapType.ENTRY, seq=42)
    exit_first.tap(at(8), WUHAN_METRO, 1, TENGZIGANG, TapType.EXIT, seq=41)
    check(exit_first, [Penalty(LegStatus.ORPHAN_EXIT, 1200), Penalty(LegStatus.INCOMPLETE, 1200)])
    entry_first = Card()
    entry_first.tap(at(8), WUHAN_METRO, 1, HANKOU_NORTH, TapType.ENTRY, seq=41)
    entry_first.tap(at(8), WUHAN_METRO, 1, TENGZIGANG, TapType.EXIT, seq=42)
    check(entry_first, [Fen(C, 300, 270, 270, 270)])


def test_e16_a_penalty_leg_ends_a_chain() -> None:
    card = Card().bus(at(8))
    card.tap(at(8, 10), WUHAN_METRO, 1, HANKOU_NORTH, TapType.ENTRY)
    card.bus(at(8, 20), line=2)
    check(card, [Fen(F, 200, 160, 160, 160, chain=0, transfer_no=0),
                 Penalty(LegStatus.INCOMPLETE, 1200),
                 Fen(F, 200, 160, 160, 160, chain=1, transfer_no=0)])


# --- Step 4: transfers -------------------------------------------------------------------------


def test_e17_free_transfer() -> None:
    card = Card().bus(at(8, day=DAY_2016)).bus(at(8, 30, day=DAY_2016), line=2)
    check(card, [Fen(F, 200, 160, 160, 160, chain=0, transfer_no=0),
                 Fen(F, 200, 160, 0, 0, chain=0, transfer_no=1)])


def test_e18_pay_rate_transfer() -> None:
    card = Card()
    for i, minute in enumerate((0, 20, 40)):
        card.bus(at(8, minute, day=DAY_2016), line=i + 1)
    check(card, [Fen(F, 200, 160, 160, 160, chain=0, transfer_no=0),
                 Fen(F, 200, 160, 0, 0, chain=0, transfer_no=1),
                 Fen(F, 200, 160, 120, 120, chain=0, transfer_no=2)])


def test_e19_chain_longer_than_the_step_list() -> None:
    card = Card()
    for i, minute in enumerate((0, 20, 40, 60, 80)):
        card.bus(at(8, 0, day=DAY_2016) + minute * 60_000, line=i + 1)
    check(card, [Fen(F, 200, 160, 160, 160, chain=0, transfer_no=0),
                 Fen(F, 200, 160, 0, 0, chain=0, transfer_no=1),
                 Fen(F, 200, 160, 120, 120, chain=0, transfer_no=2),
                 Fen(F, 200, 160, 120, 120, chain=0, transfer_no=3),
                 Fen(F, 200, 160, 160, 160, chain=1, transfer_no=0)])


def test_e20_off_fen_transfer() -> None:
    card = Card(issuer=EZHOU_TONG).bus(at(8), EZHOU_BUS, 1).bus(at(8, 40), EZHOU_BUS, 2)
    check(card, [Fen(F, 200, 180, 180, 180, chain=0, transfer_no=0),
                 Fen(F, 200, 180, 80, 80, chain=0, transfer_no=1)])


def test_e21_difference_transfer_charge_the_higher_waive_the_lower() -> None:
    card = Card().bus(at(8)).metro(at(8, 20), HANKOU_NORTH, at(8, 50), DANSHUICHI)
    card.bus(at(9, 10), line=2)
    check(card, [Fen(F, 200, 160, 160, 160, chain=0, transfer_no=0),
                 Fen(C, 400, 360, 200, 200, chain=0, transfer_no=1),
                 Fen(F, 200, 160, 0, 0, chain=0, transfer_no=2)])


def test_e22_window_from_first_boarding() -> None:
    card = Card().metro(at(8), HANKOU_NORTH, at(9, 10), ERQI_ROAD).bus(at(9, 31))
    check(card, [Fen(C, 400, 360, 360, 360, chain=0, transfer_no=0),
                 Fen(F, 200, 160, 160, 160, chain=1, transfer_no=0)])


def test_e23_window_from_previous_last_tap() -> None:
    card = Card(issuer=EZHOU_TONG)
    card.tap(at(8), EZHOU_COACH, 1, EZHOU_STATION, TapType.ENTRY)
    card.tap(at(9, 30), EZHOU_COACH, 1, GEDIAN, TapType.EXIT)
    card.bus(at(10, 15), EZHOU_BUS, 1)
    check(card, [Fen(C, 600, 570, 570, 570, chain=0, transfer_no=0),
                 Fen(F, 200, 180, 80, 80, chain=0, transfer_no=1)])


def test_e24_boarding_exactly_at_the_window_edge_is_a_transfer() -> None:
    card = Card().bus(at(8)).bus(at(9, 30), line=2)
    check(card, [Fen(F, 200, 160, 160, 160, chain=0, transfer_no=0),
                 Fen(F, 200, 160, 0, 0, chain=0, transfer_no=1)])


def test_e25_boarding_one_ms_past_the_window_edge_is_not() -> None:
    card = Card().bus(at(8)).bus(at(9, 30, 0, 1), line=2)
    check(card, [Fen(F, 200, 160, 160, 160, chain=0, transfer_no=0),
                 Fen(F, 200, 160, 160, 160, chain=1, transfer_no=0)])


# --- Step 5: daily cap -------------------------------------------------------------------------


def test_e26_daily_cap_reached_mid_leg() -> None:
    card = Card(issuer=XIAOGAN_TONG)
    for hour in (7, 9, 11, 13):
        card.bus(at(hour), XIAOGAN_BUS, 1)
    check(card, [Fen(F, 200, 180, 180, 180), Fen(F, 200, 180, 180, 180),
                 Fen(F, 200, 180, 180, 40), Fen(F, 200, 180, 180, 0)])


# --- Charged: stored value, account-based, mixed ----------------------------------------------


def test_e27_stored_value_mismatch() -> None:
    card = Card().bus(at(8), debit=200)
    check(card, [Fen(F, 200, 160, 160, 160, charged=200, debit_kind=DebitKind.STORED_VALUE)])


def test_e28_mixed_debit() -> None:
    card = Card(media=Media.NFC_PHONE)
    card.tap(at(8), WUHAN_METRO, 1, HANKOU_NORTH, TapType.ENTRY, debit=ACCOUNT_BASED)
    card.tap(at(8, 20), WUHAN_METRO, 1, TENGZIGANG, TapType.EXIT, debit=300)
    check(card, [Fen(C, 300, 270, 270, 270, charged=300, debit_kind=DebitKind.MIXED)])


# --- Versions and service days -----------------------------------------------------------------


def test_e29_a_day_straddling_two_tariff_versions() -> None:
    nov30, dec1 = dt.date(2020, 11, 30), dt.date(2020, 12, 1)
    card = Card()
    card.bus(at(22, day=nov30)).metro(at(22, 10, day=nov30), HANKOU_NORTH,
                                      at(22, 40, day=nov30), TENGZIGANG)
    card.bus(at(22, day=dec1)).metro(at(22, 10, day=dec1), HANKOU_NORTH,
                                     at(22, 40, day=dec1), TENGZIGANG)
    legs = check(card, [Fen(F, 200, 160, 160, 160, chain=0, transfer_no=0),
                        Fen(C, 300, 270, 270, 270, chain=1, transfer_no=0),
                        Fen(F, 200, 160, 160, 160, chain=0, transfer_no=0),
                        Fen(C, 300, 270, 110, 110, chain=0, transfer_no=1)])
    v2016, v2020 = day_number(dt.date(2016, 1, 1)), day_number(dec1)
    assert [leg["version"] for leg in legs] == [v2016, v2016, v2020, v2020]
    assert [leg["service_day"] for leg in legs] == [day_number(nov30)] * 2 + [day_number(dec1)] * 2


def test_e30_nothing_pairs_across_the_0400_boundary() -> None:
    tue = DAY + dt.timedelta(days=1)
    buses = Card().bus(at(3, 59, 59, 999, day=tue)).bus(at(4, 0, 0, 0, day=tue), line=2)
    legs = check(buses, [Fen(F, 200, 160, 160, 160, chain=0, transfer_no=0),
                         Fen(F, 200, 160, 160, 160, chain=0, transfer_no=0)])
    assert [leg["service_day"] for leg in legs] == [day_number(DAY), day_number(tue)]
    metro = Card().metro(at(3, 50, day=tue), HANKOU_NORTH, at(4, 10, day=tue), TENGZIGANG)
    legs = check(metro, [Penalty(LegStatus.INCOMPLETE, 1200),
                         Penalty(LegStatus.ORPHAN_EXIT, 1200)])
    assert [leg["service_day"] for leg in legs] == [day_number(DAY), day_number(tue)]


# --- The document and this file agree ----------------------------------------------------------


def test_every_example_in_the_document_has_a_test_and_back() -> None:
    in_doc = set(re.findall(r"^### (E\d\d)\b", DOC.read_text(encoding="utf-8"), re.MULTILINE))
    in_tests = {name[5:8].upper() for name in globals() if re.match(r"test_e\d\d_", name)}
    assert len(in_doc) >= 20
    assert in_doc == in_tests


def test_the_tariff_values_and_distances_the_document_quotes() -> None:
    """The examples lean on these values: if the fixture or the registry moves, so must the doc."""
    ts = qa_set()
    wuhan = ts.version_for(420100, DAY)
    metro = wuhan.networks[0]
    assert (metro.max_fare, metro.max_journey_minutes, metro.same_station_fare) == (1200, 240, 200)
    assert [(b.upper_m, b.fare_fen) for b in metro.bands or []][:7] == [
        (4000, 200), (8000, 300), (12000, 400), (18000, 500), (24000, 600), (32000, 700),
        (40000, 800)]
    assert wuhan.transfer is not None and wuhan.transfer.window_minutes == 90
    assert wuhan.transfer.window_from == "first_boarding"
    assert [s.kind for s in wuhan.transfer.steps] == ["difference", "difference"]
    old = ts.version_for(420100, DAY_2016).transfer
    assert old is not None and [(s.kind, s.bp) for s in old.steps] == [
        ("free", None), ("pay_rate", 6000), ("pay_rate", 6000)]
    assert ts.version_for(420900, DAY).caps[0].cap_fen == 400
    reg = ts.registry
    d = reg.distances(1)
    i = reg.stop_index(1)
    for a, b, metres in ((XIAODONGMEN, BANQIAO, 8000), (JINGHE, JIANSHE_2ND_ROAD, 32000),
                         (HANZHENG_STREET, BAIBUTINGHUAYUAN_ROAD, 12001),
                         (HANXI_1ST_ROAD, ZHANGJIAWAN, 18001),
                         (HANKOU_NORTH, TENGZIGANG, 4541),
                         (HANKOU_NORTH, DANSHUICHI, 8159), (HANKOU_NORTH, ERQI_ROAD, 10484)):
        assert d[i[a], i[b]] == metres, (a, b)
    ezhou = ts.version_for(420700, DAY)
    coach = ezhou.networks[0]
    assert coach.matrix is not None and (coach.max_fare, coach.max_journey_minutes) == (1500, 180)
    assert [EZHOU_STATION, GEDIAN, 600] in coach.matrix
    assert [GEDIAN, EZHOU_STATION, 550] in coach.matrix
    assert ezhou.transfer is not None and ezhou.transfer.window_from == "previous_last_tap"
    assert (ezhou.transfer.window_minutes, ezhou.transfer.steps[0].fen) == (60, 100)
