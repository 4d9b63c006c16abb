"""The four rules SPEC v1.2 pins in §6 ("Pinned in v1.2"), each as a hand-worked example of
docs/fare-examples.md (P1-P4) and, where the rule is general, a hypothesis property.

a. A penalty leg's honoured product is its boarding tap's ``product``, whatever the issuer.
b. A rebate rule has a ``valid_from``; a month uses the rule in force on its last service day
   for the whole month's spend (no rule then: no rebate).
c. Tiers are taken as written: the highest threshold reached pays its own amount, even where
   a lower tier's amount is larger.
d. A rebate is paid only to an issuer that the network's tariff version in force on the
   month's last service day accepts.
The amounts are worked by hand in the comments, never read back from the engine.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_fare_examples import (
    CLOSED_LOOP,
    HANKOU_NORTH,
    HUANGSHI_TONG,
    TENGZIGANG,
    WUHAN_METRO,
    Card,
    at,
    qa_set,
)
from test_settle_builders import leg

from clearing.fast import match_and_price_fast
from clearing.legs import Leg, LegStatus, legs_table
from clearing.reference import match_and_price
from clearing.service_day import day_number
from clearing.taps import TapType, taps_table
from settlement.month_close import month_obligations, month_rebates
from settlement.obligations import Obligation, ObligationKind
from settlement.parties import issuer, operator
from tariffs.errors import TariffError
from tariffs.load import DEFAULT_TARIFF_DIR, TariffSet, load_tariff_file, load_tariff_set
from tariffs.model import Tariff
from tariffs.validate import check_tariff
from tariffs.vocab import Product

DEFAULT = load_tariff_set()
WUHAN = 420100
METRO_NETWORK, METRO_OPERATOR = 1, 102
WUHAN_TONG, EZHOU_TONG, T_UNION = 1, 3, 21
WUHAN_FILE = DEFAULT_TARIFF_DIR / "420100-wuhan.toml"
DOC = Path(__file__).resolve().parent.parent / "docs" / "fare-examples.md"


def with_wuhan(rebates: list[dict[str, Any]] | None = None, version: int = -1,
               **changes: Any) -> TariffSet:
    """The default set with one Wuhan version's rebate rules (and other fields) replaced."""
    data = DEFAULT.tariffs[WUHAN].model_dump()
    if rebates is not None:
        changes["rebates"] = [{"network": METRO_NETWORK, "operator": METRO_OPERATOR, **r}
                              for r in rebates]
    data["versions"][version].update(changes)
    tariff = Tariff.model_validate(data)
    assert check_tariff("wuhan.toml", tariff, DEFAULT.registry) == []  # the loader accepts it
    return TariffSet(DEFAULT.registry, {**DEFAULT.tariffs, WUHAN: tariff}, DEFAULT.contracts)


def tiers(*pairs: tuple[int, int]) -> list[dict[str, int]]:
    return [{"spend_fen": s, "rebate_fen": r} for s, r in pairs]


def metro_spend(card: int, day_fen: dict[dt.date, int], iss: int = WUHAN_TONG) -> list[Leg]:
    """Wuhan Metro legs of one card: ``fen`` computed on each day (600 fen a leg at most)."""
    legs = []
    for day, fen in day_fen.items():
        seq = 0
        while fen > 0:
            seq += 1
            legs.append(leg(card_id=card, issuer=iss, operator=METRO_OPERATOR, mode=1,
                            network=METRO_NETWORK, status=int(LegStatus.COMPLETE),
                            service_day=day_number(day), board_card_seq=seq,
                            computed_fen=min(fen, 600), charged_fen=min(fen, 600)))
            fen -= 600
    return legs


def earned(legs: list[Leg], tariffs: TariffSet, month: str) -> dict[tuple[int, int], int]:
    """(issuer, card) -> rebate fen of the month."""
    return {(r.issuer, r.card_id): r.rebate_fen
            for r in month_rebates(legs_table(legs), tariffs, month)}


# --- a. A penalty leg's honoured product ---------------------------------------------------


@pytest.mark.parametrize("price", [match_and_price, match_and_price_fast])
def test_p1_a_penalty_leg_honours_its_boarding_tap_product(price: Any) -> None:
    # A Huangshi Tong student card on Wuhan Metro: Wuhan honours concessions of Wuhan Tong only.
    # 08:00 ENTRY Hankou North, 08:30 EXIT Tengzigang: COMPLETE, priced as ORDINARY.
    # 09:00 EXIT Tengzigang again: ORPHAN_EXIT, max_fare 1200, honoured product STUDENT (its
    #   boarding tap's product, though a COMPLETE leg of this card is honoured as ORDINARY).
    student = Card(issuer=HUANGSHI_TONG, product=Product.STUDENT)
    student.tap(at(8), WUHAN_METRO, 1, HANKOU_NORTH, TapType.ENTRY)
    student.tap(at(8, 30), WUHAN_METRO, 1, TENGZIGANG, TapType.EXIT)
    student.tap(at(9), WUHAN_METRO, 1, TENGZIGANG, TapType.EXIT)
    # A closed-loop card (issuer 30, accepted by no tariff) of a senior: 10:00 ENTRY Hankou
    # North and no exit: INCOMPLETE, 1200, honoured SENIOR; then 10:10 ENTRY, 14:11 EXIT:
    # 241 minutes > 240, OVERTIME, 1200, honoured SENIOR.
    senior = Card(issuer=CLOSED_LOOP, product=Product.SENIOR)
    senior.tap(at(10), WUHAN_METRO, 1, HANKOU_NORTH, TapType.ENTRY)
    senior.tap(at(10, 10), WUHAN_METRO, 1, HANKOU_NORTH, TapType.ENTRY)
    senior.tap(at(14, 11), WUHAN_METRO, 1, TENGZIGANG, TapType.EXIT)
    legs = price(taps_table(student.taps + senior.taps), qa_set()).to_pylist()
    got = sorted((x["issuer"], x["board_ts_ms"], x["status"], x["honoured_product"],
                  x["computed_fen"]) for x in legs)
    assert [g[2:] for g in got] == [
        (LegStatus.COMPLETE, Product.ORDINARY, 270),  # base 300, Wuhan's ordinary 1000 bp
        (LegStatus.ORPHAN_EXIT, Product.STUDENT, 1200),
        (LegStatus.INCOMPLETE, Product.SENIOR, 1200),
        (LegStatus.OVERTIME, Product.SENIOR, 1200),
    ]


# --- b. Rebate rules have a valid_from -----------------------------------------------------

MAY, APRIL = dt.date(2024, 5, 1), dt.date(2024, 4, 1)


def test_p2_the_rule_in_force_on_the_months_last_day_takes_the_whole_month() -> None:
    # Wuhan's 2020 version holds two rules: from 2020-12-01, 200 yuan -> 10; from 2024-05-20,
    # 200 -> 20 and 300 -> 50. A Wuhan Tong card spends 120 yuan on 1-19 May and 180 yuan on
    # 20-31 May: 30000 fen in May. On 31 May the 2024-05-20 rule is in force, and it takes the
    # whole month, the spend before the 20th too: 30000 reaches 300 -> 5000.
    # The same spend in April: on 30 April the 2020-12-01 rule is in force: 30000 -> 1000.
    tariffs = with_wuhan([
        {"valid_from": dt.date(2020, 12, 1), "tiers": tiers((20000, 1000))},
        {"valid_from": dt.date(2024, 5, 20), "tiers": tiers((20000, 2000), (30000, 5000))},
    ])
    may = metro_spend(7, {MAY.replace(day=d): 1200 for d in range(10, 20)}  # 12000
                      | {MAY.replace(day=d): 1500 for d in range(20, 32)})  # + 18000
    april = metro_spend(8, {APRIL.replace(day=d): 1000 for d in range(1, 31)})  # 30000
    assert earned(may + april, tariffs, "2024-05") == {(WUHAN_TONG, 7): 5000}
    assert earned(may + april, tariffs, "2024-04") == {(WUHAN_TONG, 8): 1000}


def test_p2_no_rule_in_force_on_the_last_day_no_rebate() -> None:
    # The only rule starts on 1 June: nothing is in force on 31 May, so May pays no rebate,
    # whatever was spent. A rule starting on 31 May itself takes the whole of May.
    june = with_wuhan([{"valid_from": dt.date(2024, 6, 1), "tiers": tiers((20000, 1000))}])
    last_day = with_wuhan([{"valid_from": dt.date(2024, 5, 31), "tiers": tiers((20000, 1000))}])
    may = metro_spend(9, {MAY.replace(day=d): 1000 for d in range(1, 31)})  # 30000, to 30 May
    assert earned(may, june, "2024-05") == {}
    assert earned(may, last_day, "2024-05") == {(WUHAN_TONG, 9): 1000}


@settings(max_examples=40, deadline=None)
@given(starts=st.lists(st.dates(dt.date(2020, 12, 1), dt.date(2024, 8, 31)), min_size=1,
                       max_size=4, unique=True),
       month=st.dates(dt.date(2021, 1, 1), dt.date(2024, 8, 1)))
def test_the_rule_in_force_is_the_latest_started_by_the_last_day(starts: list[dt.date],
                                                                 month: dt.date) -> None:
    # Rule k pays 100 * (k + 1) fen for a spend of 1000 fen or more, so the rebate names the
    # rule that priced the month; the rule is the one with the latest start on or before the
    # month's last day, whatever the order the file lists them in.
    tariffs = with_wuhan([{"valid_from": d, "tiers": tiers((1000, 100 * (k + 1)))}
                          for k, d in enumerate(starts)])
    first = month.replace(day=1)
    last = (first + dt.timedelta(days=32)).replace(day=1) - dt.timedelta(days=1)
    legs = metro_spend(1, {first: 600, last: 600})  # 1200 fen: every rule's tier is reached
    in_force = [k for k, d in enumerate(starts) if d <= last]
    want = {} if not in_force else {
        (WUHAN_TONG, 1): 100 * (max(in_force, key=lambda k: starts[k]) + 1)}
    assert earned(legs, tariffs, f"{first:%Y-%m}") == want


# --- c. Tiers as written ---------------------------------------------------------------------


def test_p3_the_highest_threshold_reached_pays_its_own_amount() -> None:
    # Tiers 200 yuan -> 50, 300 -> 30, 400 -> 40 (a lower tier pays more; the loader accepts it).
    # 25000 fen reaches 200 only: 5000. 35000 reaches 200 and 300: the highest is 300: 3000,
    # not the larger 5000 of the lower tier. 45000 reaches all three: 4000.
    tariffs = with_wuhan([{"tiers": tiers((20000, 5000), (30000, 3000), (40000, 4000))}])
    legs = (metro_spend(1, {MAY.replace(day=d): 1000 for d in range(1, 26)})
            + metro_spend(2, {MAY.replace(day=d): 1000 for d in range(1, 31)}
                          | {MAY.replace(day=31): 5000})
            + metro_spend(3, {MAY.replace(day=d): 1500 for d in range(1, 31)}))
    assert earned(legs, tariffs, "2024-05") == {
        (WUHAN_TONG, 1): 5000, (WUHAN_TONG, 2): 3000, (WUHAN_TONG, 3): 4000}


@settings(max_examples=40, deadline=None)
@given(data=st.data(), spent=st.integers(0, 25_000))
def test_tiers_are_taken_as_written(data: st.DataObject, spent: int) -> None:
    # Any ascending thresholds and any amounts the loader accepts (at most the threshold,
    # larger or smaller than the tier below): a spend earns the amount of the highest
    # threshold it reaches, else nothing.
    thresholds = sorted(data.draw(st.sets(st.integers(1, 20_000), min_size=1, max_size=4)))
    written = [(s, data.draw(st.integers(0, s))) for s in thresholds]
    tariffs = with_wuhan([{"tiers": tiers(*written)}])
    reached = [r for s, r in written if s <= spent]
    want = reached[-1] if reached else 0
    legs = metro_spend(4, {MAY.replace(day=10): spent})
    assert earned(legs, tariffs, "2024-05") == ({(WUHAN_TONG, 4): want} if want else {})


# --- d. Only accepted issuers are paid -------------------------------------------------------


def test_p4_a_rebate_goes_only_to_an_issuer_the_tariff_accepts() -> None:
    # The shipped Wuhan Metro rule (200 yuan -> 10, 300 -> 30, 400 -> 60), May 2024 (Wuhan's
    # 2020 version accepts issuers 1-9, 20, 21). Three cards each spend 30000 fen:
    # Ezhou Tong (3): accepted, 3000; a T-Union card (21): accepted, 3000; a closed-loop card
    # (30): accepted by no tariff, no rebate, and so no obligation to issuer 30.
    legs = [x for card, iss in ((1, EZHOU_TONG), (2, T_UNION), (3, CLOSED_LOOP))
            for x in metro_spend(card, {MAY.replace(day=d): 1000 for d in range(1, 31)}, iss)]
    assert earned(legs, DEFAULT, "2024-05") == {(EZHOU_TONG, 1): 3000, (T_UNION, 2): 3000}
    assert month_obligations(legs_table(legs), DEFAULT, "2024-05") == [
        Obligation(operator(METRO_OPERATOR), issuer(EZHOU_TONG), ObligationKind.REBATE, 3000),
        Obligation(operator(METRO_OPERATOR), issuer(T_UNION), ObligationKind.REBATE, 3000),
    ]


def test_p4_the_version_in_force_on_the_last_day_decides() -> None:
    # Suppose Wuhan's 2020 version (from 2020-12-01) stopped accepting T-Union cards (21):
    # a T-Union card spending 30000 fen in November 2020 is paid 3000 (30 November is under
    # the 2016 version, which accepts 21); the same spend in December 2020 is paid nothing.
    tariffs = with_wuhan(accepted_issuers=[1, 2, 3, 4, 5, 6, 7, 8, 9, 20])
    nov = metro_spend(1, {dt.date(2020, 11, d): 1000 for d in range(1, 31)}, T_UNION)
    dec = metro_spend(2, {dt.date(2020, 12, d): 1000 for d in range(1, 31)}, T_UNION)
    assert earned(nov + dec, tariffs, "2020-11") == {(T_UNION, 1): 3000}
    assert earned(nov + dec, tariffs, "2020-12") == {}


# --- the loader: valid_from is checked with file and field -----------------------------------


def wuhan_problems(tmp_path: Path, old: str, new: str) -> list[str]:
    text = WUHAN_FILE.read_text(encoding="utf-8")
    assert old in text, old
    path = tmp_path / "420100-wuhan.toml"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    with pytest.raises(TariffError) as exc:
        load_tariff_file(path, DEFAULT.registry)
    return [f"{p.file}: {p.version}: {p.field}: {p.code}" for p in exc.value.problems]


FIRST_RULE = "valid_from = 2016-01-01  # SPEC §6 v1.2"


def test_the_shipped_rules_start_with_their_versions() -> None:
    for version in DEFAULT.tariffs[WUHAN].versions:
        assert [r.valid_from for r in version.rebates] == [version.valid_from]


def test_a_rebate_rule_before_its_version(tmp_path: Path) -> None:
    assert wuhan_problems(tmp_path, FIRST_RULE, "valid_from = 2015-12-31 #") == [
        "420100-wuhan.toml: 2016-01-01: versions[0].rebates[0].valid_from: "
        "TARIFF_REBATE_VALID_FROM"]


def test_a_rebate_rule_that_starts_under_the_next_version(tmp_path: Path) -> None:
    assert wuhan_problems(tmp_path, FIRST_RULE, "valid_from = 2020-12-01 #") == [
        "420100-wuhan.toml: 2016-01-01: versions[0].rebates[0].valid_from: "
        "TARIFF_REBATE_VALID_FROM"]


def test_a_rebate_valid_from_that_is_not_a_date(tmp_path: Path) -> None:
    assert wuhan_problems(tmp_path, FIRST_RULE, 'valid_from = "2016-01" #') == [
        "420100-wuhan.toml: 2016-01-01: versions[0].rebates[0].valid_from: TARIFF_FIELD"]


def test_two_rules_of_one_network_from_one_day(tmp_path: Path) -> None:
    rule = ("[[versions.rebates]]\nnetwork = 1\noperator = 102\nvalid_from = 2016-01-01\n"
            "tiers = [{ spend_fen = 100, rebate_fen = 1 }]\n\n")
    second = "# ---------------------------------------------------------------------------------------------\n[[versions]]\nvalid_from = 2020-12-01"  # noqa: E501
    assert wuhan_problems(tmp_path, second, rule + second) == [
        "420100-wuhan.toml: 2016-01-01: versions[0].rebates[1].network: "
        "TARIFF_DUPLICATE_REBATE"]


def test_every_pinned_example_in_the_document_has_a_test_and_back() -> None:
    in_doc = set(re.findall(r"^### (P\d)\b", DOC.read_text(encoding="utf-8"), re.MULTILINE))
    in_tests = {name[5:7].upper() for name in globals() if re.match(r"test_p\d_", name)}
    assert in_doc == in_tests == {"P1", "P2", "P3", "P4"}
