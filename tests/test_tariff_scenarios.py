"""Every tariff rule kind, priced through the reference as SPEC §6 says: literal tap scripts.

Each scenario is a card's taps as a fare inspector would write them down, the tariff it rides
under, and the fen SPEC §6 gives by hand at every step (worked in the comments). Scenarios use
the default tariffs where the rule is real data, and small scenario tariffs (written out below,
loaded and validated like any tariff file) where an edge needs exact numbers.
"""

from __future__ import annotations

import datetime as dt
import shutil
from itertools import count
from pathlib import Path

import pyarrow as pa
import pytest

from clearing.legs import Leg, LegStatus, legs_from_table
from clearing.reference import match_and_price
from clearing.service_day import day_number, local_ms
from clearing.taps import TapType, taps_table
from settlement.month_close import month_rebates
from tariffs.load import DEFAULT_TARIFF_DIR, TariffSet, load_tariff_set
from tariffs.registry import load_registry
from tariffs.vocab import Product

REG = load_registry()
DEFAULT = load_tariff_set()
WUHAN_TONG, HUANGSHI_TONG, EZHOU_TONG, XIANTAO_TONG, CLOSED_LOOP = 1, 2, 3, 7, 30
DAY = dt.date(2024, 5, 14)
_card_ids = count(1000)

# ---------------------------------------------------------------------------------------------
# Tap scripts


def script(text: str, *, issuer: int = WUHAN_TONG, product: Product = Product.ORDINARY,
           day: dt.date = DAY, card: int | None = None) -> list[dict]:
    """Taps of one card, one per line: ``[date] HH:MM[:SS[.mmm]] FLAT|ENTRY|EXIT op/line [@stop]``.

    A line without a date is on ``day``; a FLAT tap without a stop is at stop 0 (unknown).
    Every tap is account-based (debited -1): the engine decides the charge.
    """
    card_id = card if card is not None else next(_card_ids)
    taps = []
    for seq, raw in enumerate(line.split() for line in text.strip().splitlines()):
        words = list(raw)
        date = dt.date.fromisoformat(words.pop(0)) if "-" in words[0] else day
        clock, kind, op_line, *rest = words
        h, m, *s = clock.split(":")
        sec, _, ms = (s[0] if s else "0").partition(".")
        operator, line = (int(x) for x in op_line.split("/"))
        stop = int(rest[0].lstrip("@")) if rest else 0
        city = REG.stops[stop].city if stop else REG.operators[operator].city
        taps.append({
            "operator": operator, "device_id": operator * 1000 + line, "device_seq": seq,
            "card_id": card_id, "card_seq": seq, "issuer": issuer, "product": int(product),
            "media": 0, "ts_ms": local_ms(date, int(h), int(m), int(sec), int(ms or 0)),
            "city": city, "line": line, "stop": stop, "tap_type": int(TapType[kind]),
            "debited_fen": -1,
        })
    return taps


def price(taps: list[dict], tariffs: TariffSet) -> list[Leg]:
    """The reference's legs of the taps, in SPEC §5 order."""
    return legs_from_table(match_and_price(taps_table(taps), tariffs))


def fares(legs: list[Leg]) -> list[tuple[int, int, int, int]]:
    """Per leg: (base, step-3 fare, step-4 fare, computed fare)."""
    return [(g.base_fen, g.product_fare_fen, g.transfer_fare_fen, g.computed_fen) for g in legs]


def chains(legs: list[Leg]) -> list[tuple[int, int]]:
    """Per leg: (chain ordinal, transfer number)."""
    return [(g.chain, g.transfer_no) for g in legs]


# ---------------------------------------------------------------------------------------------
# Scenario tariffs


def tariffs_with(tmp_path: Path, **files: str) -> TariffSet:
    """The default tariffs with some files replaced, loaded and validated like any set."""
    directory = tmp_path / "tariffs"
    if not directory.exists():
        shutil.copytree(DEFAULT_TARIFF_DIR, directory)
    for name, text in files.items():
        (directory / f"{name}.toml").write_text(text, encoding="utf-8")
    return load_tariff_set(directory, REG)


# Ezhou's intercity coach (network 2, one line 310001-310005) has round track lengths:
# 310001 -14000- 310002 -12000- 310003 -9000- 310004 -21000- 310005, so the shortest paths
# are 14000, 26000, 35000, 56000 from 310001; 12000, 21000, 42000 from 310002; ...
EZHOU_BANDS = """[
  { upper_m = 12000, fare_fen = 300 },
  { upper_m = 14000, fare_fen = 500 },
  { upper_m = 25999, fare_fen = 700 },
  { upper_m = 26000, fare_fen = 900 },
  { upper_m = 35000, fare_fen = 1000 },
  { fare_fen = 1200 },
]"""

EZHOU = """\
area = 420700
name = "Ezhou scenario"
illustrative = true

[[versions]]
valid_from = 2019-01-01
accepted_issuers = [1, 2, 3, 4, 5, 6, 7, 8, 9, 20, 21]
concession_issuers = [3]

[[versions.line_fares]]
operator = 301
fare_fen = 200

[[versions.networks]]
network = 2
max_journey_minutes = 180
max_fare = {max_fare}
same_station_fare = 250
bands = {bands}

[[versions.prices]]
mode = "bus"
product = "ordinary"
rate_bp = 0

[[versions.prices]]
mode = "intercity"
product = "ordinary"
rate_bp = 0
{extra}"""

# Xiantao buses: lines 1-3 cost 200, lines 4-5 cost 400; Xiantao Tong and every circle card
# pay 20 % less (200 -> 160, 400 -> 320); a card no reader honours pays 5 % less.
XIANTAO = """\
area = 429004
name = "Xiantao scenario"
illustrative = true

[[versions]]
valid_from = 2019-01-01
visitor_rate_bp = 500
accepted_issuers = [1, 2, 3, 4, 5, 6, 7, 8, 9, 20, 21]
concession_issuers = [7]

[[versions.line_fares]]
operator = 701
lines = [1, 2, 3]
fare_fen = 200

[[versions.line_fares]]
operator = 701
lines = [4, 5]
fare_fen = 400

[[versions.prices]]
mode = "bus"
product = "ordinary"
rate_bp = 2000
{extra}"""


def ezhou(tmp_path: Path, extra: str = "", bands: str = EZHOU_BANDS,
          max_fare: int = 1500) -> TariffSet:
    return tariffs_with(tmp_path, **{"420700-ezhou": EZHOU.format(
        bands=bands, extra=extra, max_fare=max_fare)})


def xiantao(tmp_path: Path, extra: str) -> TariffSet:
    return tariffs_with(tmp_path, **{"429004-xiantao": XIANTAO.format(extra=extra)})


def transfer_rule(steps: str, window: int = 60, window_from: str = "first_boarding",
                  modes: str = '[["bus", "bus"]]') -> str:
    return (f"\n[versions.transfer]\nwindow_minutes = {window}\nwindow_from = \"{window_from}\"\n"
            f"allowed_modes = {modes}\nsteps = {steps}\n")


# ---------------------------------------------------------------------------------------------
# Step 1: base fares


def test_each_distance_band_edge(tmp_path: Path) -> None:
    """d <= upper_m picks the band: a distance equal to an edge is in the lower band."""
    tariffs = ezhou(tmp_path)
    legs = price(script("""
        07:00 ENTRY 302/1 @310002
        07:20 EXIT  302/1 @310003
        08:00 ENTRY 302/1 @310001
        08:20 EXIT  302/1 @310002
        09:00 ENTRY 302/1 @310002
        09:20 EXIT  302/1 @310004
        10:00 ENTRY 302/1 @310001
        10:30 EXIT  302/1 @310003
        11:00 ENTRY 302/1 @310001
        11:40 EXIT  302/1 @310004
        12:00 ENTRY 302/1 @310001
        12:50 EXIT  302/1 @310005
        13:00 ENTRY 302/1 @310004
        13:10 EXIT  302/1 @310003
    """, issuer=EZHOU_TONG), tariffs)
    assert [g.status for g in legs] == [LegStatus.COMPLETE] * 7
    assert [g.base_fen for g in legs] == [
        300,   # 12000 m: exactly the first edge -> first band
        500,   # 14000 m: exactly the second edge
        700,   # 21000 m: inside (14000, 25999]
        900,   # 26000 m: one metre past 25999 -> the band whose edge is 26000
        1000,  # 35000 m: exactly the last bounded edge
        1200,  # 56000 m: beyond every edge -> the unbounded band
        300,   # 9000 m, travelling back down the line: fares are by shortest path
    ]
    assert [g.computed_fen for g in legs] == [g.base_fen for g in legs]  # rate 0


def test_same_station_exit_pays_the_same_station_fare_and_its_discount() -> None:
    """Wuhan Metro: in and out at Hankou North; 200 base, Wuhan Tong 10 % off -> 180."""
    legs = price(script("""
        08:00 ENTRY 102/1 @100001
        08:05 EXIT  102/1 @100001
    """), DEFAULT)
    assert [g.status for g in legs] == [LegStatus.COMPLETE]
    # apply_rate(200, 1000) = floor((200 * 9000 + 5000) / 10000) = 180
    assert fares(legs) == [(200, 180, 180, 180)]
    assert legs[0].card_discount_fen == 20


def test_an_exit_that_never_came_pays_max_fare_and_breaks_the_chain(tmp_path: Path) -> None:
    tariffs = ezhou(tmp_path, extra=transfer_rule('[{ kind = "free" }]', window=120,
                                                  modes='[["bus", "intercity"], '
                                                        '["intercity", "bus"]]'))
    legs = price(script("""
        08:00 FLAT  301/1
        08:20 ENTRY 302/1 @310001
        09:30 FLAT  301/2
    """, issuer=EZHOU_TONG), tariffs)
    assert [g.status for g in legs] == [LegStatus.FLAT, LegStatus.INCOMPLETE, LegStatus.FLAT]
    # The entry closes as INCOMPLETE at the next FLAT tap: max_fare, no discount, no chain;
    # the bus after it is no transfer (its previous leg is a penalty leg).
    assert fares(legs) == [(200, 200, 200, 200), (1500, 1500, 1500, 1500), (200, 200, 200, 200)]
    assert chains(legs) == [(0, 0), (-1, 0), (1, 0)]


# ---------------------------------------------------------------------------------------------
# Steps 2-3: honoured product, same card same discount, visitors


def test_the_visitor_rate(tmp_path: Path) -> None:
    """A closed-loop card no circle reader honours: 5 % off the base, priced as ORDINARY."""
    tariffs = xiantao(tmp_path, "")
    legs = price(script("08:00 FLAT 701/1", issuer=CLOSED_LOOP, product=Product.STUDENT),
                 tariffs)
    # apply_rate(200, 500) = floor((200 * 9500 + 5000) / 10000) = floor(190.5) = 190
    assert fares(legs) == [(200, 190, 190, 190)]
    assert (legs[0].product, legs[0].honoured_product) == (Product.STUDENT, Product.ORDINARY)


def test_a_concession_is_honoured_at_home_but_not_in_another_city() -> None:
    """A Huangshi Tong student card: 70 fen at home (fixed), Wuhan's ordinary 160 in Wuhan."""
    home = price(script("08:00 FLAT 201/1", issuer=HUANGSHI_TONG, product=Product.STUDENT),
                 DEFAULT)
    away = price(script("08:00 FLAT 101/1", issuer=HUANGSHI_TONG, product=Product.STUDENT),
                 DEFAULT)
    assert fares(home) == [(200, 70, 70, 70)]  # min(200, fixed 70)
    assert home[0].honoured_product == Product.STUDENT
    assert fares(away) == [(200, 160, 160, 160)]  # apply_rate(200, 2000): as any Wuhan card
    assert away[0].honoured_product == Product.ORDINARY
    # ... and a Wuhan Tong student in Huangshi pays Huangshi's card fare, fixed 160.
    visitor = price(script("08:00 FLAT 201/1", issuer=WUHAN_TONG, product=Product.STUDENT),
                    DEFAULT)
    assert fares(visitor) == [(200, 160, 160, 160)]


def test_military_ride_free_in_huangshi_on_huangshi_cards() -> None:
    legs = price(script("08:00 FLAT 202/3", issuer=HUANGSHI_TONG, product=Product.OTHER),
                 DEFAULT)
    assert fares(legs) == [(200, 0, 0, 0)]


# ---------------------------------------------------------------------------------------------
# Step 4: transfers


@pytest.mark.parametrize(("step", "expected"), [
    # second leg on line 4: base 400, f = apply_rate(400, 2000) = 320
    ('{ kind = "free" }', 0),
    ('{ kind = "off_fen", fen = 50 }', 270),  # max(0, 320 - 50)
    ('{ kind = "off_fen", fen = 500 }', 0),  # max(0, 320 - 500)
    ('{ kind = "pay_rate", bp = 6000 }', 240),  # min(320, apply_rate(400, 4000) = 240)
    ('{ kind = "pay_rate", bp = 9000 }', 320),  # min(320, apply_rate(400, 1000) = 360)
    ('{ kind = "difference" }', 160),  # max(0, 320 - 160): the pair pays the higher fare
])
def test_each_transfer_step_kind(tmp_path: Path, step: str, expected: int) -> None:
    tariffs = xiantao(tmp_path, transfer_rule(f"[{step}]"))
    legs = price(script("""
        08:00 FLAT 701/1
        08:30 FLAT 701/4
    """, issuer=XIANTAO_TONG), tariffs)
    assert fares(legs) == [(200, 160, 160, 160), (400, 320, expected, expected)]
    assert chains(legs) == [(0, 0), (0, 1)]
    assert legs[1].transfer_discount_fen == 320 - expected


def test_difference_compares_with_the_previous_legs_step_3_fare(tmp_path: Path) -> None:
    """扣高免低 along a chain: each transfer pays only what it costs above the leg before it."""
    tariffs = xiantao(tmp_path, transfer_rule('[{ kind = "difference" }, { kind = "difference" }]'))
    legs = price(script("""
        08:00 FLAT 701/1
        08:20 FLAT 701/4
        08:40 FLAT 701/2
    """, issuer=XIANTAO_TONG), tariffs)
    # 160; then 320 - 160 = 160; then 160 - 320 < 0 -> 0 (P's step-3 fare 320, not its 160)
    assert [g.computed_fen for g in legs] == [160, 160, 0]


@pytest.mark.parametrize(("window_from", "expected"), [
    # first_boarding: 09:20 is 80 min after the chain's first boarding (08:00) -> new chain
    ("first_boarding", [(0, 0), (1, 0)]),
    # previous_last_tap: 09:20 is 40 min after the coach's exit (08:40) -> a transfer
    ("previous_last_tap", [(0, 0), (0, 1)]),
])
def test_both_window_from_choices(tmp_path: Path, window_from: str,
                                  expected: list[tuple[int, int]]) -> None:
    tariffs = ezhou(tmp_path, extra=transfer_rule(
        '[{ kind = "free" }]', window=60, window_from=window_from,
        modes='[["intercity", "bus"]]'))
    legs = price(script("""
        08:00 ENTRY 302/1 @310001
        08:40 EXIT  302/1 @310002
        09:20 FLAT  301/1
    """, issuer=EZHOU_TONG), tariffs)
    assert chains(legs) == expected
    assert legs[1].computed_fen == (0 if expected[1][1] else 200)


def test_the_window_is_inclusive_to_the_millisecond(tmp_path: Path) -> None:
    tariffs = xiantao(tmp_path, transfer_rule('[{ kind = "free" }, { kind = "free" }]'))
    legs = price(script("""
        08:00:00     FLAT 701/1
        08:30:00     FLAT 701/2
        09:00:00.000 FLAT 701/3
    """, issuer=XIANTAO_TONG), tariffs)
    assert [g.computed_fen for g in legs] == [160, 0, 0]  # 60 min exactly: still a transfer
    legs = price(script("""
        08:00:00     FLAT 701/1
        08:30:00     FLAT 701/2
        09:00:00.001 FLAT 701/3
    """, issuer=XIANTAO_TONG), tariffs)
    assert [g.computed_fen for g in legs] == [160, 0, 160]  # one millisecond late: new chain


def test_a_chain_longer_than_the_step_list_starts_again(tmp_path: Path) -> None:
    """One step (max_transfers 1): legs 3 and 4 form a new chain, which can transfer again."""
    tariffs = xiantao(tmp_path, transfer_rule('[{ kind = "free" }]', window=120))
    legs = price(script("""
        08:00 FLAT 701/1
        08:10 FLAT 701/2
        08:20 FLAT 701/3
        08:30 FLAT 701/1
        08:40 FLAT 701/2
    """, issuer=XIANTAO_TONG), tariffs)
    assert chains(legs) == [(0, 0), (0, 1), (1, 0), (1, 1), (2, 0)]
    assert [g.computed_fen for g in legs] == [160, 0, 160, 0, 160]


def test_a_mode_pair_not_allowed_is_no_transfer() -> None:
    """Wuhan 2016: bus and ferry transfers only; a metro leg after a bus pays in full."""
    legs = price(script("""
        08:00 FLAT  101/1
        08:20 ENTRY 102/1 @100001
        08:30 EXIT  102/1 @100001
        08:50 FLAT  103/1
    """, day=dt.date(2019, 5, 14)), DEFAULT)
    assert chains(legs) == [(0, 0), (1, 0), (2, 0)]  # the ferry follows the metro leg: no pair
    assert [g.computed_fen for g in legs] == [160, 180, 130]


# ---------------------------------------------------------------------------------------------
# Step 5: daily caps


def test_a_cap_reached_in_the_middle_of_a_leg(tmp_path: Path) -> None:
    tariffs = xiantao(tmp_path, '\n[[versions.caps]]\nproduct = "ordinary"\ncap_fen = 400\n')
    legs = price(script("""
        07:00 FLAT 701/1
        12:00 FLAT 701/1
        18:00 FLAT 701/1
        21:00 FLAT 701/1
    """, issuer=XIANTAO_TONG), tariffs)
    # S = 0, 160, 320, 400: min(160, 400 - 320) = 80, then min(160, max(0, 400 - 400)) = 0
    assert [g.computed_fen for g in legs] == [160, 160, 80, 0]
    assert [g.cap_discount_fen for g in legs] == [0, 0, 80, 160]


def test_a_cap_counts_only_its_own_area(tmp_path: Path) -> None:
    tariffs = xiantao(tmp_path, '\n[[versions.caps]]\nproduct = "ordinary"\ncap_fen = 300\n')
    legs = price(script("""
        07:00 FLAT 101/1
        08:00 FLAT 701/1
        18:00 FLAT 701/1
    """, issuer=XIANTAO_TONG), tariffs)
    # the Wuhan bus (160) is in another area: Xiantao's S is 0 then 160 -> min(160, 140)
    assert [g.computed_fen for g in legs] == [160, 160, 140]


# ---------------------------------------------------------------------------------------------
# Versions by service day


def test_a_day_that_straddles_two_tariff_versions() -> None:
    """Wuhan's 2016 rule prices 30 Nov 2020 up to 03:59 on 1 Dec; the 2020 policy then."""
    night = price(script("""
        2020-12-01 01:00 FLAT 101/1
        2020-12-01 01:20 FLAT 101/2
        2020-12-01 01:40 FLAT 101/3
    """), DEFAULT)
    morning = price(script("""
        2020-12-01 04:00 FLAT 101/1
        2020-12-01 04:20 FLAT 101/2
        2020-12-01 04:40 FLAT 101/3
    """), DEFAULT)
    assert {g.service_day for g in night} == {day_number(dt.date(2020, 11, 30))}
    assert {g.version for g in night} == {day_number(dt.date(2016, 1, 1))}
    assert {g.version for g in morning} == {day_number(dt.date(2020, 12, 1))}
    # 2016: free, then pay 60 % of the base: min(160, apply_rate(200, 4000) = 120) = 120
    assert [g.computed_fen for g in night] == [160, 0, 120]
    # 2020: 扣高免低 twice: 160 - 160 = 0, 160 - 160 = 0
    assert [g.computed_fen for g in morning] == [160, 0, 0]


def test_a_journey_across_midnight_stays_on_its_service_day() -> None:
    legs = price(script("""
        2020-11-30 23:50 ENTRY 102/1 @100001
        2020-12-01 00:20 EXIT  102/1 @100001
        2020-12-01 00:40 FLAT  101/1
    """), DEFAULT)
    assert [g.version for g in legs] == [day_number(dt.date(2016, 1, 1))] * 2
    assert chains(legs) == [(0, 0), (1, 0)]  # 2016: metro -> bus is no transfer


# ---------------------------------------------------------------------------------------------
# Monthly rebate tiers (month close over the reference's legs)


def test_the_rebate_tiers(tmp_path: Path) -> None:
    bands = "[{ upper_m = 12000, fare_fen = 4999 }, { fare_fen = 5000 }]"
    rebate = ("\n[[versions.rebates]]\nnetwork = 2\noperator = 302\ntiers = ["
              "{ spend_fen = 20000, rebate_fen = 1000 }, { spend_fen = 30000, rebate_fen = 3000 },"
              " { spend_fen = 40000, rebate_fen = 6000 }]\n")
    tariffs = ezhou(tmp_path, extra=rebate, bands=bands, max_fare=9000)

    def month_of(journeys: list[int], *, missing_exit: bool = False) -> list[dict]:
        """One journey a day: 5000 (310001 -> 310002, 14 km) or 4999 (310002 -> 310003)."""
        taps: list[dict] = []
        card = next(_card_ids)
        for i, fare in enumerate(journeys):
            a, b = (310001, 310002) if fare == 5000 else (310002, 310003)
            taps += script(f"08:00 ENTRY 302/1 @{a}\n08:40 EXIT 302/1 @{b}", issuer=EZHOU_TONG,
                           day=dt.date(2024, 5, 1 + i), card=card)
        if missing_exit:
            taps += script("08:00 ENTRY 302/1 @310001", issuer=EZHOU_TONG,
                           day=dt.date(2024, 5, 30), card=card)
        return taps

    cards = {
        "19999": month_of([5000, 5000, 5000, 4999]),
        "20000": month_of([5000] * 4, missing_exit=True),  # the 9000 penalty does not count
        "29999": month_of([5000] * 5 + [4999]),
        "30000": month_of([5000] * 6),
        "40000": month_of([5000] * 8),
        "45000": month_of([5000] * 9),
    }
    taps = [t for card_taps in cards.values() for t in card_taps]
    legs = match_and_price(taps_table(taps), tariffs)
    rebates = month_rebates(legs, tariffs, "2024-05")
    earned = {r.card_id: (r.spend_fen, r.rebate_fen) for r in rebates}
    by_name = {name: earned.get(card_taps[0]["card_id"], (None, 0))
               for name, card_taps in cards.items()}
    assert by_name == {
        "19999": (None, 0),  # below the first tier: no rebate
        "20000": (20000, 1000),
        "29999": (29999, 1000),
        "30000": (30000, 3000),
        "40000": (40000, 6000),
        "45000": (45000, 6000),  # the highest tier reached only
    }


def test_scenario_taps_are_canonical() -> None:
    table = taps_table(script("08:00 FLAT 101/1\n08:10 ENTRY 102/1 @100001"))
    assert isinstance(table, pa.Table) and table.num_rows == 2
