"""Every kind of tariff problem is reported with file, version, field path and plain words."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tariffs.errors import TariffError
from tariffs.load import DEFAULT_TARIFF_DIR, load_tariff_file, load_tariff_set
from tariffs.registry import DEFAULT_REGISTRY_DIR, Registry, load_registry

# A small valid tariff for Ezhou (420700): flat buses of operator 301 and the intercity
# coach network 2 (stops 310001..310005, 14+12+9+21 km apart along one line).
EZHOU = """\
area = 420700
name = "Test Ezhou"

[[versions]]
valid_from = 2019-01-01
accepted_issuers = [1, 3]
concession_issuers = [3]

[[versions.line_fares]]
operator = 301
fare_fen = 200

[[versions.networks]]
network = 2
max_journey_minutes = 180
max_fare = 1500
same_station_fare = 300
bands = [{ upper_m = 10000, fare_fen = 300 }, { fare_fen = 1200 }]

[[versions.prices]]
mode = "bus"
product = "ordinary"
rate_bp = 1000

[[versions.prices]]
mode = "intercity"
product = "ordinary"
rate_bp = 500
"""
V = "t.toml: version 2019-01-01"


def problems(tmp_path: Path, text: str, registry: Registry | None = None) -> list[str]:
    """The problems of one tariff file, as the operator reads them; [] when it loads."""
    path = tmp_path / "t.toml"
    path.write_text(text, encoding="utf-8")
    try:
        load_tariff_file(path, registry)
    except TariffError as exc:
        return [str(p) for p in exc.problems]
    return []


def edit(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


def test_the_base_fixture_is_valid(tmp_path: Path) -> None:
    assert problems(tmp_path, EZHOU) == []


def test_the_nine_default_tariffs_load() -> None:
    tariffs = load_tariff_set()
    assert sorted(tariffs.tariffs) == sorted(load_registry().cities)


# --- the registry: stops, lines, operators, issuers, networks ---------------------------------


def test_unknown_stop_in_a_matrix(tmp_path: Path) -> None:
    matrix_rows = ", ".join(f"[{a}, {b}, 500]" for a in range(310001, 310006)
                            for b in range(310001, 310006) if a != b)
    text = edit(EZHOU, "bands = [{ upper_m = 10000, fare_fen = 300 }, { fare_fen = 1200 }]",
                f"matrix = [{matrix_rows}, [310001, 999999, 500], [100001, 310002, 500]]")
    assert problems(tmp_path, text) == [
        f"{V}: versions[0].networks[0].matrix[20]: stop 999999 is not in the registry "
        "[TARIFF_UNKNOWN_STOP]",
        f"{V}: versions[0].networks[0].matrix[21]: stop 100001 is not a stop of network 2 "
        "[TARIFF_UNKNOWN_STOP]",
    ]


def test_unknown_line(tmp_path: Path) -> None:
    text = edit(EZHOU, "operator = 301\nfare_fen = 200",
                "operator = 301\nlines = [1, 2, 3, 4, 5, 6, 77]\nfare_fen = 200")
    assert problems(tmp_path, text) == [
        f"{V}: versions[0].line_fares[0].lines[6]: line 77 of operator 301 is not in the "
        "registry [TARIFF_UNKNOWN_LINE]",
    ]


def test_an_entry_exit_line_has_no_flat_fare(tmp_path: Path) -> None:
    text = edit(EZHOU, "[[versions.networks]]",
                "[[versions.line_fares]]\noperator = 302\nlines = [1]\nfare_fen = 500\n\n"
                "[[versions.networks]]")
    assert problems(tmp_path, text) == [
        f"{V}: versions[0].line_fares[1].lines[0]: line 1 of operator 302 is an entry-exit "
        "line: its fares come from its network [TARIFF_UNKNOWN_LINE]",
    ]


def test_a_flat_line_without_fare(tmp_path: Path) -> None:
    text = edit(EZHOU, "operator = 301\nfare_fen = 200",
                "operator = 301\nlines = [1, 2, 3, 4, 5]\nfare_fen = 200")
    assert problems(tmp_path, text) == [
        f"{V}: versions[0].line_fares: flat line 6 of operator 301 (Bus 6) has no fare "
        "[TARIFF_UNPRICED_LINE]",
    ]


def test_a_line_priced_twice(tmp_path: Path) -> None:
    text = edit(EZHOU, "[[versions.networks]]",
                "[[versions.line_fares]]\noperator = 301\nlines = [4]\nfare_fen = 300\n\n"
                "[[versions.networks]]")
    assert problems(tmp_path, text) == [
        f"{V}: versions[0].line_fares[1].lines[0]: line 4 of operator 301 already has a fare "
        "in versions[0].line_fares[0] [TARIFF_DUPLICATE_LINE_FARE]",
    ]


def test_unknown_operator(tmp_path: Path) -> None:
    text = edit(EZHOU, "[[versions.networks]]",
                "[[versions.line_fares]]\noperator = 999\nfare_fen = 300\n\n[[versions.networks]]")
    assert problems(tmp_path, text) == [
        f"{V}: versions[0].line_fares[1].operator: operator 999 is not in the registry "
        "[TARIFF_UNKNOWN_OPERATOR]",
    ]


def test_an_operator_of_another_city(tmp_path: Path) -> None:
    text = edit(EZHOU, "[[versions.networks]]",
                "[[versions.line_fares]]\noperator = 101\nfare_fen = 300\n\n[[versions.networks]]")
    assert problems(tmp_path, text) == [
        f"{V}: versions[0].line_fares[1].operator: operator 101 (Wuhan Bus Group 武汉公交集团) "
        "belongs to city 420100, not to this area 420700: a line is priced by its operator's "
        "city (SPEC §5) [TARIFF_FOREIGN_OPERATOR]",
    ]


def test_unknown_issuer(tmp_path: Path) -> None:
    text = edit(EZHOU, "accepted_issuers = [1, 3]", "accepted_issuers = [1, 3, 77]")
    assert problems(tmp_path, text) == [
        f"{V}: versions[0].accepted_issuers[2]: issuer 77 is not in the registry "
        "[TARIFF_UNKNOWN_ISSUER]",
    ]


def test_concession_issuers_must_be_accepted(tmp_path: Path) -> None:
    text = edit(EZHOU, "concession_issuers = [3]", "concession_issuers = [3, 2]")
    assert problems(tmp_path, text) == [
        f"{V}: versions[0].concession_issuers[1]: issuer 2 (Huangshi Tong 黄石通) has its "
        "concessions honoured but is not in accepted_issuers: add it there or remove it here "
        "[TARIFF_CONCESSION_NOT_ACCEPTED]",
    ]


def test_unknown_network(tmp_path: Path) -> None:
    text = edit(EZHOU, "network = 2", "network = 1")
    assert problems(tmp_path, text) == [
        f"{V}: versions[0].networks[0].network: network 1 (Wuhan Metro) has no line run by an "
        "operator of this area 420700 [TARIFF_UNKNOWN_NETWORK]",
        f"{V}: versions[0].networks: network 2 (Ezhou-Wuhan intercity coach) runs in this area "
        "but has no fares [TARIFF_UNPRICED_NETWORK]",
    ]


# --- ranges -------------------------------------------------------------------------------------


def test_fare_out_of_range(tmp_path: Path) -> None:
    text = edit(EZHOU, "fare_fen = 200", "fare_fen = -5")
    assert problems(tmp_path, text) == [
        f"{V}: versions[0].line_fares[0].fare_fen: amount -5 fen is out of range: an amount is "
        "0 to 10000000 fen [TARIFF_FARE_RANGE]",
    ]


def test_matrix_fare_out_of_range(tmp_path: Path) -> None:
    rows = ", ".join(f"[{a}, {b}, {-1 if (a, b) == (310001, 310002) else 500}]"
                     for a in range(310001, 310006) for b in range(310001, 310006) if a != b)
    text = edit(EZHOU, "bands = [{ upper_m = 10000, fare_fen = 300 }, { fare_fen = 1200 }]",
                f"matrix = [{rows}]")
    assert problems(tmp_path, text) == [
        f"{V}: versions[0].networks[0].matrix[0]: amount -1 fen is out of range: an amount is "
        "0 to 10000000 fen [TARIFF_FARE_RANGE]",
        f"{V}: versions[0].networks[0].matrix: 1 ordered pairs of distinct stops have no fare "
        "(310001->310002); a matrix prices every ordered pair [TARIFF_MATRIX_INCOMPLETE]",
    ]


def test_rate_out_of_range(tmp_path: Path) -> None:
    text = edit(EZHOU, "rate_bp = 1000", "rate_bp = 12000")
    assert problems(tmp_path, text) == [
        f"{V}: versions[0].prices[0].rate_bp: rate 12000 bp is out of range: a rate is 0 to "
        "10000 bp (0 to 100 %) [TARIFF_RATE_RANGE]",
    ]


def test_visitor_rate_out_of_range(tmp_path: Path) -> None:
    text = edit(EZHOU, "accepted_issuers", "visitor_rate_bp = -1\naccepted_issuers")
    assert problems(tmp_path, text) == [
        f"{V}: versions[0].visitor_rate_bp: rate -1 bp is out of range: a rate is 0 to 10000 "
        "bp (0 to 100 %) [TARIFF_RATE_RANGE]",
    ]


def test_a_fare_must_be_whole_fen(tmp_path: Path) -> None:
    text = edit(EZHOU, "fare_fen = 200", "fare_fen = 1.5")
    assert problems(tmp_path, text) == [
        f"{V}: versions[0].line_fares[0].fare_fen: must be a whole number of fen, not 1.5 "
        "[TARIFF_FIELD]",
    ]


# --- networks -------------------------------------------------------------------------------


def _registry_with(tmp_path: Path, lines: str, line_stops: str, stops: str = "") -> Registry:
    """A copy of the default registry with extra CSV rows (the real files stay untouched)."""
    directory = tmp_path / "registry"
    shutil.copytree(DEFAULT_REGISTRY_DIR, directory)
    for name, rows in (("lines.csv", lines), ("line_stops.csv", line_stops),
                       ("stops.csv", stops)):
        if rows:
            with open(directory / name, "a", encoding="utf-8") as fh:
                fh.write(rows)
    return load_registry(directory)


def test_disconnected_network(tmp_path: Path) -> None:
    registry = _registry_with(
        tmp_path,
        lines="302,2,Ezhou-Wuhan Intercity 2,intercity,2,test\n",
        line_stops="302,2,1,310101,0,test\n302,2,2,310102,5000,test\n",
        stops="310101,Island A,,420700,test\n310102,Island B,,420700,test\n",
    )
    assert problems(tmp_path, EZHOU, registry) == [
        f"{V}: versions[0].networks[0].network: network 2's track graph is not connected: 2 "
        "stops (310101, 310102) cannot be reached from stop 310001, so no distance between "
        "them exists; check the registry's line_stops [TARIFF_NETWORK_DISCONNECTED]",
    ]


def test_a_network_run_by_operators_of_two_cities(tmp_path: Path) -> None:
    registry = _registry_with(
        tmp_path,
        lines="101,99,Wuhan coach,intercity,2,test\n",
        line_stops="101,99,1,310004,0,test\n101,99,2,310005,3000,test\n",
    )
    assert problems(tmp_path, EZHOU, registry) == [
        f"{V}: versions[0].networks[0].network: network 2 has lines run by operators of "
        "different cities (city 420100: lines 101/99; city 420700: lines 302/1): one network "
        "belongs to one tariff area [TARIFF_NETWORK_SPANS_CITIES]",
    ]


def test_max_fare_below_a_band(tmp_path: Path) -> None:
    text = edit(EZHOU, "max_fare = 1500", "max_fare = 1000")
    assert problems(tmp_path, text) == [
        f"{V}: versions[0].networks[0].max_fare: max_fare 1000 fen is below the fare 1200 fen "
        "of bands[1]: max_fare (what an incomplete journey pays) must be at least every fare "
        "of the network [TARIFF_MAX_FARE_TOO_LOW]",
    ]


def test_max_fare_below_the_same_station_fare(tmp_path: Path) -> None:
    text = edit(EZHOU, "same_station_fare = 300", "same_station_fare = 1600")
    assert problems(tmp_path, text) == [
        f"{V}: versions[0].networks[0].max_fare: max_fare 1500 fen is below the fare 1600 fen "
        "of same_station_fare: max_fare (what an incomplete journey pays) must be at least "
        "every fare of the network [TARIFF_MAX_FARE_TOO_LOW]",
    ]


def test_max_fare_below_a_matrix_fare(tmp_path: Path) -> None:
    rows = ", ".join(f"[{a}, {b}, {(b - 310000) * 400}]"
                     for a in range(310001, 310006) for b in range(310001, 310006) if a != b)
    text = edit(EZHOU, "bands = [{ upper_m = 10000, fare_fen = 300 }, { fare_fen = 1200 }]",
                f"matrix = [{rows}]")
    assert problems(tmp_path, text) == [
        f"{V}: versions[0].networks[0].max_fare: max_fare 1500 fen is below the fare 2000 fen "
        "of matrix[3]: max_fare (what an incomplete journey pays) must be at least every fare "
        "of the network [TARIFF_MAX_FARE_TOO_LOW]",
    ]


def test_matrix_rows_that_make_no_sense(tmp_path: Path) -> None:
    rows = ", ".join(f"[{a}, {b}, 500]" for a in range(310001, 310006)
                     for b in range(310001, 310006) if a != b)
    text = edit(EZHOU, "bands = [{ upper_m = 10000, fare_fen = 300 }, { fare_fen = 1200 }]",
                f"matrix = [{rows}, [310001, 310001, 100], [310001, 310002], "
                "[310001, 310002, 600]]")
    assert problems(tmp_path, text) == [
        f"{V}: versions[0].networks[0].matrix[20]: row [310001, 310001, 100] prices stop "
        "310001 to itself: use same_station_fare for that [TARIFF_MATRIX_ROW]",
        f"{V}: versions[0].networks[0].matrix[21]: row [310001, 310002] must have three "
        "numbers: [from_stop, to_stop, fare_fen] [TARIFF_MATRIX_ROW]",
        f"{V}: versions[0].networks[0].matrix[22]: stops 310001 to 310002 already have a fare "
        "in matrix[0] [TARIFF_MATRIX_DUPLICATE]",
    ]


def test_bands_must_ascend(tmp_path: Path) -> None:
    text = edit(EZHOU, "{ upper_m = 10000, fare_fen = 300 }",
                "{ upper_m = 10000, fare_fen = 300 }, { upper_m = 5000, fare_fen = 400 }")
    assert problems(tmp_path, text) == [
        f"{V}: versions[0].networks[0]: distance bands must have strictly ascending upper_m "
        "[TARIFF_FIELD]",
    ]


def test_a_network_priced_twice(tmp_path: Path) -> None:
    block = EZHOU[EZHOU.index("[[versions.networks]]"):EZHOU.index("[[versions.prices]]")]
    text = edit(EZHOU, "[[versions.prices]]", block + "[[versions.prices]]")
    assert problems(tmp_path, text) == [
        f"{V}: versions[0].networks[1].network: network 2 already has fares in "
        "versions[0].networks[0] [TARIFF_DUPLICATE_NETWORK]",
    ]


# --- versions ------------------------------------------------------------------------------


def _second_version(day: str) -> str:
    return EZHOU + "\n" + EZHOU[EZHOU.index("[[versions]]"):].replace(
        "valid_from = 2019-01-01", f"valid_from = {day}")


def test_two_versions_in_order_are_fine(tmp_path: Path) -> None:
    assert problems(tmp_path, _second_version("2021-03-01")) == []


def test_overlapping_versions(tmp_path: Path) -> None:
    assert problems(tmp_path, _second_version("2019-01-01")) == [
        f"{V}: versions[1].valid_from: takes effect on 2019-01-01, which is not after the "
        "previous version's 2019-01-01: list versions in strictly ascending valid_from so that "
        "every service day has exactly one version [TARIFF_VERSION_OVERLAP]",
    ]


def test_versions_out_of_order(tmp_path: Path) -> None:
    assert problems(tmp_path, _second_version("2018-06-30")) == [
        "t.toml: version 2018-06-30: versions[1].valid_from: takes effect on 2018-06-30, which "
        "is not after the previous version's 2019-01-01: list versions in strictly ascending "
        "valid_from so that every service day has exactly one version [TARIFF_VERSION_OVERLAP]",
    ]


def test_a_date_in_quotes(tmp_path: Path) -> None:
    text = edit(EZHOU, "valid_from = 2019-01-01", 'valid_from = "2019-01-01"')
    assert problems(tmp_path, text) == [
        "t.toml: version 2019-01-01: versions[0].valid_from: must be a TOML date such as "
        "2016-01-01 (no quotes), not '2019-01-01' [TARIFF_FIELD]",
    ]


# --- prices, transfers, caps, funders, rebates ----------------------------------------------


def test_a_price_for_an_unknown_product(tmp_path: Path) -> None:
    text = edit(EZHOU, 'product = "ordinary"\nrate_bp = 500',
                'product = "ordinary"\nrate_bp = 500\n\n[[versions.prices]]\nmode = "bus"\n'
                'product = "pupil"\nfixed_fen = 50')
    assert problems(tmp_path, text) == [
        f"{V}: versions[0].prices[2].product: 'pupil' is not a product: use one of ordinary, "
        "student, senior, disabled or other [TARIFF_UNKNOWN_PRODUCT]",
    ]


def test_a_price_for_an_unknown_mode(tmp_path: Path) -> None:
    text = edit(EZHOU, 'mode = "intercity"', 'mode = "tram"')
    assert problems(tmp_path, text) == [
        f"{V}: versions[0].prices[1].mode: 'tram' is not a mode: use one of bus, metro, ferry "
        "or intercity [TARIFF_UNKNOWN_MODE]",
    ]


def test_missing_ordinary_price_for_a_mode_the_area_runs(tmp_path: Path) -> None:
    text = edit(EZHOU, 'mode = "intercity"\nproduct = "ordinary"',
                'mode = "intercity"\nproduct = "student"')
    assert problems(tmp_path, text) == [
        f"{V}: versions[0].prices: the area runs intercity lines but has no ordinary price for "
        'intercity: add a price with mode = "intercity" and product = "ordinary" '
        "[TARIFF_NO_ORDINARY_PRICE]",
    ]


def test_a_price_given_twice(tmp_path: Path) -> None:
    text = EZHOU + '\n[[versions.prices]]\nmode = "bus"\nproduct = "ordinary"\nfixed_fen = 150\n'
    assert problems(tmp_path, text) == [
        f"{V}: versions[0].prices[2]: ordinary on bus already has a price in prices[0] "
        "[TARIFF_DUPLICATE_PRICE]",
    ]


def test_a_price_with_both_rate_and_fixed_fare(tmp_path: Path) -> None:
    text = edit(EZHOU, "rate_bp = 1000", "rate_bp = 1000\nfixed_fen = 150")
    assert problems(tmp_path, text) == [
        f"{V}: versions[0].prices[0]: give exactly one of 'rate_bp' or 'fixed_fen' "
        "[TARIFF_FIELD]",
    ]


TRANSFER = """
[versions.transfer]
window_minutes = 60
window_from = "previous_last_tap"
allowed_modes = [["bus", "bus"]]
steps = [{ kind = "free" }]
"""


def test_a_transfer_rule_is_valid(tmp_path: Path) -> None:
    assert problems(tmp_path, EZHOU + TRANSFER) == []


def test_a_transfer_rule_with_no_steps(tmp_path: Path) -> None:
    text = EZHOU + edit(TRANSFER, 'steps = [{ kind = "free" }]', "steps = []")
    assert problems(tmp_path, text) == [
        f"{V}: versions[0].transfer.steps: a transfer rule needs at least one step (one per "
        "transfer allowed); remove the rule if there are no transfers [TARIFF_TRANSFER_NO_STEPS]",
    ]


def test_a_transfer_step_of_unknown_kind(tmp_path: Path) -> None:
    text = EZHOU + edit(TRANSFER, 'kind = "free"', 'kind = "half"')
    assert problems(tmp_path, text) == [
        f"{V}: versions[0].transfer.steps[0].kind: 'half' is not a transfer step kind: use one "
        "of free, off_fen, pay_rate or difference [TARIFF_UNKNOWN_STEP]",
    ]


def test_a_pay_rate_step_needs_its_rate(tmp_path: Path) -> None:
    text = EZHOU + edit(TRANSFER, 'kind = "free"', 'kind = "pay_rate"')
    assert problems(tmp_path, text) == [
        f"{V}: versions[0].transfer.steps[0]: 'bp' is given with kind 'pay_rate' and only then "
        "[TARIFF_FIELD]",
    ]


def test_a_transfer_step_rate_out_of_range(tmp_path: Path) -> None:
    text = EZHOU + edit(TRANSFER, 'kind = "free"', 'kind = "pay_rate", bp = 10001')
    assert problems(tmp_path, text) == [
        f"{V}: versions[0].transfer.steps[0].bp: rate 10001 bp is out of range: a rate is 0 to "
        "10000 bp (0 to 100 %) [TARIFF_RATE_RANGE]",
    ]


def test_a_transfer_between_unknown_modes(tmp_path: Path) -> None:
    text = EZHOU + edit(TRANSFER, '[["bus", "bus"]]', '[["bus", "tram"]]')
    assert problems(tmp_path, text) == [
        f"{V}: versions[0].transfer.allowed_modes[0][1]: 'tram' is not a mode: use one of bus, "
        "metro, ferry or intercity [TARIFF_UNKNOWN_MODE]",
    ]


def test_a_transfer_rule_with_no_mode_pairs(tmp_path: Path) -> None:
    text = EZHOU + edit(TRANSFER, '[["bus", "bus"]]', "[]")
    assert problems(tmp_path, text) == [
        f"{V}: versions[0].transfer.allowed_modes: a transfer rule needs at least one allowed "
        "[from, to] mode pair [TARIFF_TRANSFER_NO_MODES]",
    ]


def test_a_cap_for_an_unknown_product_and_a_cap_twice(tmp_path: Path) -> None:
    text = EZHOU + ('\n[[versions.caps]]\nproduct = "ordinary"\ncap_fen = 400\n'
                    '\n[[versions.caps]]\nproduct = "ordinary"\ncap_fen = 500\n')
    assert problems(tmp_path, text) == [
        f"{V}: versions[0].caps[1]: ordinary already has a daily cap in caps[0] "
        "[TARIFF_DUPLICATE_CAP]",
    ]
    text = EZHOU + '\n[[versions.caps]]\nproduct = "adult"\ncap_fen = 400\n'
    assert problems(tmp_path, text) == [
        f"{V}: versions[0].caps[0].product: 'adult' is not a product: use one of ordinary, "
        "student, senior, disabled or other [TARIFF_UNKNOWN_PRODUCT]",
    ]


def test_a_funder_that_is_not_a_party(tmp_path: Path) -> None:
    text = EZHOU + '\n[versions.funders]\ncard = { student = "school" }\ntransfer = "centre"\n'
    assert problems(tmp_path, text) == [
        f"{V}: versions[0].funders.card.student: 'school' is not a party that can fund a "
        "discount: use operator (the leg's operator bears it) or government (the area's "
        "government pays it) [TARIFF_UNKNOWN_FUNDER]",
        f"{V}: versions[0].funders.transfer: 'centre' is not a party that can fund a discount: "
        "use operator (the leg's operator bears it) or government (the area's government pays "
        "it) [TARIFF_UNKNOWN_FUNDER]",
    ]


def test_a_funder_for_an_unknown_product(tmp_path: Path) -> None:
    text = EZHOU + '\n[versions.funders]\ncard = { veteran = "government" }\n'
    assert problems(tmp_path, text) == [
        f"{V}: versions[0].funders.card.veteran.[key]: 'veteran' is not a product: use one of "
        "ordinary, student, senior, disabled or other [TARIFF_UNKNOWN_PRODUCT]",
    ]


REBATE = """
[[versions.rebates]]
network = 2
operator = 302
tiers = [{ spend_fen = 20000, rebate_fen = 1000 }, { spend_fen = 30000, rebate_fen = 3000 }]
"""


def test_a_rebate_is_valid(tmp_path: Path) -> None:
    assert problems(tmp_path, EZHOU + REBATE) == []


def test_rebate_problems(tmp_path: Path) -> None:
    text = EZHOU + edit(edit(REBATE, "operator = 302", "operator = 301"),
                        "spend_fen = 30000, rebate_fen = 3000",
                        "spend_fen = 10000, rebate_fen = 30000")
    assert problems(tmp_path, text) == [
        f"{V}: versions[0].rebates[0].operator: operator 301 runs no line of network 2, so it "
        "cannot owe that network's rebate [TARIFF_REBATE_OPERATOR]",
        f"{V}: versions[0].rebates[0].tiers: rebate tiers must have strictly ascending "
        "spend_fen [TARIFF_REBATE_TIERS]",
        f"{V}: versions[0].rebates[0].tiers[1]: a rebate of 30000 fen exceeds the spend of "
        "10000 fen that earns it [TARIFF_REBATE_TIERS]",
    ]


# --- the file itself ----------------------------------------------------------------------


def test_a_misspelt_field(tmp_path: Path) -> None:
    text = edit(EZHOU, "fare_fen = 200", "fare = 200")
    assert problems(tmp_path, text) == [
        f"{V}: versions[0].line_fares[0].fare_fen: is required but missing "
        "[TARIFF_MISSING_FIELD]",
        f"{V}: versions[0].line_fares[0].fare: is not a known field (check its spelling) "
        "[TARIFF_UNKNOWN_FIELD]",
    ]


def test_not_toml(tmp_path: Path) -> None:
    found = problems(tmp_path, EZHOU + "\nthis is = = not toml\n")
    assert len(found) == 1
    assert found[0].startswith("t.toml: version -: -: is not valid TOML: ")
    assert found[0].endswith("[TARIFF_SYNTAX]")


def test_unknown_area(tmp_path: Path) -> None:
    text = edit(EZHOU, "area = 420700", "area = 110100")
    assert problems(tmp_path, text) == [
        "t.toml: version -: area: city 110100 is not in the registry: the area is a GB/T 2260 "
        "city code [TARIFF_UNKNOWN_AREA]",
    ]


# --- a whole directory ----------------------------------------------------------------------


def _copy_default(tmp_path: Path) -> Path:
    directory = tmp_path / "tariffs"
    shutil.copytree(DEFAULT_TARIFF_DIR, directory)
    return directory


def test_a_set_reports_every_broken_file(tmp_path: Path) -> None:
    directory = _copy_default(tmp_path)
    wuhan = directory / "420100-wuhan.toml"
    wuhan.write_text(edit(wuhan.read_text(encoding="utf-8"), "max_fare = 1200",
                          "max_fare = 1100"), encoding="utf-8")
    (directory / "420700-ezhou-copy.toml").write_text(EZHOU, encoding="utf-8")
    with pytest.raises(TariffError) as caught:
        load_tariff_set(directory, load_registry())
    assert [str(p) for p in caught.value.problems] == [
        "420100-wuhan.toml: version 2016-01-01: versions[0].networks[0].max_fare: max_fare 1100 "
        "fen is below the fare 1200 fen of bands[10]: max_fare (what an incomplete journey "
        "pays) must be at least every fare of the network [TARIFF_MAX_FARE_TOO_LOW]",
        "420700-ezhou.toml: version -: area: area 420700 already has a tariff file "
        "[TARIFF_DUPLICATE_AREA]",
    ]


def test_a_set_missing_a_city(tmp_path: Path) -> None:
    directory = _copy_default(tmp_path)
    (directory / "429006-tianmen.toml").unlink()
    with pytest.raises(TariffError) as caught:
        load_tariff_set(directory, load_registry())
    assert [str(p) for p in caught.value.problems] == [
        f"{directory}: version -: -: no tariff file for city 429006 [TARIFF_MISSING_AREA]",
    ]


def test_a_contract_given_twice(tmp_path: Path) -> None:
    directory = _copy_default(tmp_path)
    contracts = directory / "contracts.toml"
    contracts.write_text(contracts.read_text(encoding="utf-8")
                         + "\n[[contracts]]\noperator = 101\nissuers = [3]\nfee_bp = 10\n",
                         encoding="utf-8")
    with pytest.raises(TariffError) as caught:
        load_tariff_set(directory, load_registry())
    assert [str(p) for p in caught.value.problems] == [
        "contracts.toml: version -: contracts[14].issuers[0]: operator 101 already has a fee "
        "for issuer 3 in contracts[0] [TARIFF_DUPLICATE_CONTRACT]",
    ]


def test_a_contract_rate_out_of_range(tmp_path: Path) -> None:
    directory = _copy_default(tmp_path)
    contracts = directory / "contracts.toml"
    contracts.write_text(edit(contracts.read_text(encoding="utf-8"), "fee_bp = 50",
                              "fee_bp = 50000"), encoding="utf-8")
    with pytest.raises(TariffError) as caught:
        load_tariff_set(directory, load_registry())
    assert [str(p) for p in caught.value.problems] == [
        "contracts.toml: version -: contracts[0].fee_bp: rate 50000 bp is out of range: a rate "
        "is 0 to 10000 bp (0 to 100 %) [TARIFF_RATE_RANGE]",
    ]
