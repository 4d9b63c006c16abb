"""GTFS-Fares v2 import: the gtfs.org examples priced by Tongka, and per-row refusals.

The examples' fare files are written here as the pages give them; their routes and stops are
Tongka's registry (a feed's route ids must be registry lines), so the example's fare structure
prices real Wuhan journeys through the real pipeline. Amounts are read as hundredths of the
example's currency (cents for fen): the structure is the test, not the exchange rate.
"""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from clearing.reference import match_and_price
from clearing.service_day import local_ms
from clearing.taps import ACCOUNT_BASED, TapType, taps_table
from tariffs.cli import EXIT_BAD_ARGUMENT, app
from tariffs.error_codes import ErrorCode
from tariffs.fares import apply_rate
from tariffs.gtfs import GtfsError, export, fit_price, import_feed
from tariffs.load import TariffSet, load_tariff_set
from tariffs.registry import FLAT
from tariffs.vocab import Media, Product

DAY = dt.date(2024, 3, 1)
WUHAN_BUS, WUHAN_METRO, WUHAN_FERRY = 101, 102, 103
FARE_FILES = ("fare_media.txt", "rider_categories.txt", "fare_products.txt", "networks.txt",
              "route_networks.txt", "areas.txt", "stop_areas.txt", "fare_leg_rules.txt",
              "fare_transfer_rules.txt", "timeframes.txt")


def write(directory: Path, name: str, text: str) -> None:
    (directory / name).write_text(text.strip() + "\n", encoding="utf-8")


@pytest.fixture(scope="module")
def base_feed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """agency/routes/stops/feed_info of the registry, from an export, with no fare files."""
    out = tmp_path_factory.mktemp("base")
    export(load_tariff_set(), DAY, out)
    for name in FARE_FILES:
        (out / name).unlink(missing_ok=True)
    return out


@pytest.fixture
def feed(base_feed: Path, tmp_path: Path) -> Path:
    shutil.copytree(base_feed, tmp_path / "feed")
    return tmp_path / "feed"


def imported(feed: Path, out: Path, currency: str = "CNY") -> TariffSet:
    ts = load_tariff_set()
    result = import_feed(feed, out, registry=ts.registry, currency=currency)
    return TariffSet(ts.registry, {**ts.tariffs, **result.tariffs}, ts.contracts)


class Card:
    """One Wuhan Tong card's taps on DAY, account-based."""

    def __init__(self, product: Product = Product.ORDINARY, card_id: int = 77_000_001) -> None:
        self.product, self.card_id, self.rows, self.seq = product, card_id, [], 0

    def tap(self, hh: int, mm: int, operator: int, line: int, stop: int, kind: TapType) -> Card:
        reg = load_tariff_set().registry
        self.seq += 1
        self.rows.append(dict(
            operator=operator, device_id=1, device_seq=len(self.rows) + 1 + self.card_id,
            card_id=self.card_id, card_seq=self.seq, issuer=1, product=int(self.product),
            media=int(Media.CARD), ts_ms=local_ms(DAY, hh, mm),
            city=reg.stops[stop].city if stop else reg.operators[operator].city, line=line,
            stop=stop, tap_type=int(kind), debited_fen=ACCOUNT_BASED))
        return self

    def bus(self, hh: int, mm: int, line: int = 1) -> Card:
        return self.tap(hh, mm, WUHAN_BUS, line, 0, TapType.FLAT)

    def metro(self, hh: int, mm: int, a: int, b: int, minutes: int = 20) -> Card:
        line, _ = _line_of(a, b)
        self.tap(hh, mm, WUHAN_METRO, line, a, TapType.ENTRY)
        return self.tap(hh, mm + minutes, WUHAN_METRO, line, b, TapType.EXIT)

    def fares(self, ts: TariffSet) -> list[int]:
        return match_and_price(taps_table(self.rows), ts).column("computed_fen").to_pylist()


def _line_of(a: int, b: int) -> tuple[int, tuple[int, ...]]:
    reg = load_tariff_set().registry
    for ln in sorted(reg.lines.values(), key=lambda x: x.key):
        if ln.operator == WUHAN_METRO and a in ln.stops and b in ln.stops:
            return ln.line, ln.stops
    raise AssertionError("no metro line through both stops")


def _metro_line() -> tuple[int, ...]:
    reg = load_tariff_set().registry
    return reg.lines[(WUHAN_METRO, 1)].stops


# ---------------------------------------------------------------------------------------------
# gtfs.org examples


def test_gtfs_org_single_ride_fare(feed: Path, tmp_path: Path) -> None:
    """gtfs.org, Getting started > Features > Fares, "Fare Products" sample data:
    ``single_ride, Single Ride Fare, 2.75, USD`` and one leg rule naming only the product.

    A leg rule with no network and no areas matches every leg: every ride costs 2.75, bus,
    ferry and metro alike, any distance, any rider (there are no rider categories).
    """
    write(feed, "fare_products.txt", """
fare_product_id,fare_product_name,amount,currency
single_ride,Single Ride Fare,2.75,USD
""")
    write(feed, "fare_leg_rules.txt", """
fare_product_id
single_ride
""")
    ts = imported(feed, tmp_path / "out", currency="USD")
    stops = _metro_line()
    card = Card().bus(8, 0).metro(9, 0, stops[0], stops[-1]).metro(12, 0, stops[1], stops[1])
    card.tap(15, 0, WUHAN_FERRY, 1, 0, TapType.FLAT)
    # bus 2.75, end-to-end metro 2.75, same-station exit 2.75, ferry 2.75: no transfers.
    assert card.fares(ts) == [275, 275, 275, 275]
    student = Card(Product.STUDENT, card_id=77_000_002).bus(8, 0)
    assert student.fares(ts) == [275]  # no rider categories: every rider pays the same


TRANSLINK = {
    # gtfs.org, Documentation > Schedule > Examples > Fares: "Zone-Based Fares" and "Fare
    # Transfers", example TransLink (Vancouver), contactless fares as the page lists them in
    # fare_products.txt: Bus Flat Fare 3.20, 1-Zone Fare 3.20, 2-Zone Fare 4.65, 3-Zone Fare
    # 6.35 CAD; "a 3-zone fare is for legs that cross all three zones (ZN1 to ZN3)" (the page's
    # own fare_leg_rules table maps ZN1-ZN3 to the 2-zone product; we follow its text);
    # "Transfers are valid for 90 minutes after fare validation. Bus-to-bus transfers within
    # this time period are free." (Sea Island's rule_priority legs are not used here.)
    "fare_media.txt": """
fare_media_id,fare_media_name,fare_media_type
contactless,Contactless,3
""",
    "fare_products.txt": """
fare_product_id,fare_product_name,fare_media_id,amount,currency
bus_flat,Bus Flat Fare,contactless,3.20,CAD
1_zone,1 Zone,contactless,3.20,CAD
2_zone,2 Zone,contactless,4.65,CAD
3_zone,3 Zone,contactless,6.35,CAD
""",
    "fare_leg_rules.txt": """
leg_group_id,network_id,from_area_id,to_area_id,fare_product_id
bus,,,,bus_flat
skytrain,skytrain,ZN1,ZN1,1_zone
skytrain,skytrain,ZN2,ZN2,1_zone
skytrain,skytrain,ZN3,ZN3,1_zone
skytrain,skytrain,ZN1,ZN2,2_zone
skytrain,skytrain,ZN2,ZN1,2_zone
skytrain,skytrain,ZN2,ZN3,2_zone
skytrain,skytrain,ZN3,ZN2,2_zone
skytrain,skytrain,ZN1,ZN3,3_zone
skytrain,skytrain,ZN3,ZN1,3_zone
""",
    "fare_transfer_rules.txt": """
from_leg_group_id,to_leg_group_id,transfer_count,duration_limit,duration_limit_type,fare_transfer_type
bus,bus,-1,5400,1,0
""",
}


def _translink_feed(feed: Path) -> dict[str, list[int]]:
    """The example's three zones over Wuhan Metro's stations: by thirds of the stop ids."""
    reg = load_tariff_set().registry
    stations = list(reg.networks[1].stops)
    third = -(-len(stations) // 3)
    zones = {f"ZN{k + 1}": stations[k * third:(k + 1) * third] for k in range(3)}
    for name, text in TRANSLINK.items():
        write(feed, name, text)
    write(feed, "areas.txt", "area_id\nZN1\nZN2\nZN3")
    write(feed, "stop_areas.txt", "area_id,stop_id\n" + "\n".join(
        f"{z},{s}" for z, stops in zones.items() for s in stops))
    write(feed, "networks.txt", "network_id,network_name\nskytrain,SkyTrain")
    metro_routes = [f"{ln.operator}-{ln.line}" for ln in reg.lines.values() if ln.network == 1]
    write(feed, "route_networks.txt", "network_id,route_id\n" + "\n".join(
        f"skytrain,{r}" for r in metro_routes))
    return zones


def _pair_on_one_line(zones: dict[str, list[int]], za: str, zb: str) -> tuple[int, int]:
    reg = load_tariff_set().registry
    for ln in sorted(reg.lines.values(), key=lambda x: x.key):
        if ln.network != 1:
            continue
        a = [s for s in ln.stops if s in zones[za]]
        b = [s for s in ln.stops if s in zones[zb] and s not in a[:1]]
        if a and b:
            return a[0], b[-1]
    raise AssertionError(f"no line from {za} to {zb}")


def test_gtfs_org_translink_zones_and_transfers(feed: Path, tmp_path: Path) -> None:
    zones = _translink_feed(feed)
    ts = imported(feed, tmp_path / "out", currency="CAD")
    z1z1 = _pair_on_one_line(zones, "ZN1", "ZN1")
    z1z2 = _pair_on_one_line(zones, "ZN1", "ZN2")
    z3z1 = _pair_on_one_line(zones, "ZN3", "ZN1")
    # One rider's day: a 1-zone, a 2-zone and a 3-zone SkyTrain ride (no transfer rule joins
    # SkyTrain legs), then a bus at 17:00 and another 89 minutes after that first validation
    # (free), then a third at 18:31, 91 minutes after it (a new fare).
    card = (Card().metro(7, 0, *z1z1).metro(9, 0, *z1z2).metro(12, 0, *z3z1)
            .bus(17, 0).bus(18, 29, line=2).bus(18, 31, line=3))
    assert card.fares(ts) == [320, 465, 635, 320, 0, 320]


def test_translink_transfer_rule_as_imported(feed: Path, tmp_path: Path) -> None:
    """transfer_count -1 (unlimited) becomes many free steps, said in a note; the window runs
    from the first validation (duration_limit_type 1: departure to departure)."""
    _translink_feed(feed)
    result = import_feed(feed, tmp_path / "out", currency="CAD")
    wuhan = result.tariffs[420100].versions[0]
    assert wuhan.transfer is not None
    assert wuhan.transfer.window_minutes == 90
    assert wuhan.transfer.window_from == "first_boarding"
    assert {s.kind for s in wuhan.transfer.steps} == {"free"}
    assert ["bus", "bus"] in wuhan.transfer.allowed_modes
    assert ["metro", "metro"] not in wuhan.transfer.allowed_modes
    assert any("unlimited transfers" in n for n in result.notes)


def test_rider_categories_and_media(feed: Path, tmp_path: Path) -> None:
    """Rider categories become product prices: a student pays half (a rate the import finds
    from the amounts), a senior rides free, on every medium alike; the cash amount is the base
    fare. Modelled on the gtfs.org "Rider Categories" feature (fare_products.rider_category_id)."""
    write(feed, "fare_media.txt", """
fare_media_id,fare_media_name,fare_media_type
cash,Cash,0
card,Transit card,2
""")
    write(feed, "rider_categories.txt", """
rider_category_id,rider_category_name,is_default_fare_category
adult,Adult,1
student,Student,0
senior,Senior,0
""")
    write(feed, "fare_products.txt", """
fare_product_id,rider_category_id,fare_media_id,amount,currency
ride,adult,cash,2.00,CNY
ride,adult,card,1.80,CNY
ride,student,card,1.00,CNY
ride,senior,card,0,CNY
far,adult,cash,4.00,CNY
far,adult,card,3.60,CNY
far,student,card,2.00,CNY
far,senior,card,0.00,CNY
""")
    write(feed, "fare_leg_rules.txt", "network_id,fare_product_id\n,ride")
    ts = imported(feed, tmp_path / "out")
    wuhan = ts.version_for(420100, DAY)
    assert {(p.mode, p.product): p.rate_bp for p in wuhan.prices if p.mode == "bus"} == {
        ("bus", "ordinary"): 1000, ("bus", "student"): 5000, ("bus", "senior"): 10000}
    assert apply_rate(200, 1000) == 180
    assert Card().bus(8, 0).fares(ts) == [180]
    assert Card(Product.STUDENT, card_id=77_000_003).bus(8, 0).fares(ts) == [100]
    assert Card(Product.SENIOR, card_id=77_000_004).bus(8, 0).fares(ts) == [0]


# ---------------------------------------------------------------------------------------------
# Refusals: per file, per row, with a stable code


def _codes(exc: pytest.ExceptionInfo[GtfsError]) -> set[tuple[str, str, int]]:
    return {(p.code, p.file, p.row) for p in exc.value.problems}


def test_missing_required_file(feed: Path, tmp_path: Path) -> None:
    write(feed, "fare_leg_rules.txt", "fare_product_id\nx")
    with pytest.raises(GtfsError) as exc:
        import_feed(feed, tmp_path / "out")
    assert (ErrorCode.GTFS_MISSING_FILE, "fare_products.txt", 0) in _codes(exc)
    assert exc.value.code == ErrorCode.GTFS_INVALID


def test_amount_with_three_decimals_names_its_row(feed: Path, tmp_path: Path) -> None:
    write(feed, "fare_products.txt", """
fare_product_id,amount,currency
a,2.00,CNY
b,2.755,CNY
""")
    write(feed, "fare_leg_rules.txt", "fare_product_id\na")
    with pytest.raises(GtfsError) as exc:
        import_feed(feed, tmp_path / "out")
    assert _codes(exc) == {(ErrorCode.GTFS_BAD_AMOUNT, "fare_products.txt", 2)}
    assert "row 2" in str(exc.value) and "[GTFS_BAD_AMOUNT]" in str(exc.value)


def test_other_currency_and_unknown_route(feed: Path, tmp_path: Path) -> None:
    with open(feed / "routes.txt", "a", encoding="utf-8") as fh:
        fh.write("Route_1,101,Route 1,3\n")
    write(feed, "fare_products.txt", "fare_product_id,amount,currency\na,2.75,USD")
    write(feed, "fare_leg_rules.txt", "fare_product_id\na")
    with pytest.raises(GtfsError) as exc:
        import_feed(feed, tmp_path / "out")
    codes = {(c, f) for c, f, _ in _codes(exc)}
    assert (ErrorCode.GTFS_UNSUPPORTED, "fare_products.txt") in codes
    assert (ErrorCode.GTFS_UNKNOWN_ID, "routes.txt") in codes


def test_time_of_day_fares_are_refused(feed: Path, tmp_path: Path) -> None:
    """gtfs.org "Time-based fares" (timeframes.txt): Tongka prices no time of day."""
    write(feed, "timeframes.txt", "timeframe_group_id,start_time,end_time,service_id\n"
                                  "peak,07:00:00,09:00:00,weekdays")
    write(feed, "fare_products.txt", "fare_product_id,amount,currency\na,2,CNY\nb,3,CNY")
    write(feed, "fare_leg_rules.txt", "from_timeframe_group_id,fare_product_id\npeak,b\n,a")
    with pytest.raises(GtfsError) as exc:
        import_feed(feed, tmp_path / "out")
    assert (ErrorCode.GTFS_UNSUPPORTED, "fare_leg_rules.txt", 1) in _codes(exc)
    assert (ErrorCode.GTFS_UNSUPPORTED, "timeframes.txt", 0) in _codes(exc)


def test_prices_that_differ_by_medium_are_refused(feed: Path, tmp_path: Path) -> None:
    write(feed, "fare_media.txt", "fare_media_id,fare_media_type\ncard,2\napp,4")
    write(feed, "fare_products.txt", "fare_product_id,fare_media_id,amount,currency\n"
                                     "a,card,2.00,CNY\na,app,1.90,CNY")
    write(feed, "fare_leg_rules.txt", "fare_product_id\na")
    with pytest.raises(GtfsError) as exc:
        import_feed(feed, tmp_path / "out")
    assert {c for c, _, _ in _codes(exc)} == {ErrorCode.GTFS_UNSUPPORTED}
    assert "every medium alike" in str(exc.value)


def test_a_stop_pair_with_no_fare_or_two_fares(feed: Path, tmp_path: Path) -> None:
    stations = load_tariff_set().registry.networks[1].stops
    write(feed, "fare_products.txt", "fare_product_id,amount,currency\na,2,CNY\nb,3,CNY")
    write(feed, "areas.txt", "area_id\nA")
    write(feed, "stop_areas.txt", f"area_id,stop_id\nA,{stations[0]}")
    # Only trips from A are priced on the metro: every other pair has no fare.
    write(feed, "fare_leg_rules.txt", "network_id,from_area_id,fare_product_id\nmetro,A,a\n,,a")
    write(feed, "networks.txt", "network_id\nmetro")
    routes = [f"102-{ln.line}" for ln in load_tariff_set().registry.lines.values()
              if ln.network == 1]
    write(feed, "route_networks.txt", "network_id,route_id\n" + "\n".join(
        f"metro,{r}" for r in routes))
    with pytest.raises(GtfsError) as exc:
        import_feed(feed, tmp_path / "out")
    assert ErrorCode.GTFS_NO_FARE in {c for c, _, _ in _codes(exc)}
    write(feed, "fare_leg_rules.txt", "network_id,from_area_id,fare_product_id\n"
                                      "metro,A,a\nmetro,A,b\nmetro,,a\n,,a")
    with pytest.raises(GtfsError) as exc:
        import_feed(feed, tmp_path / "out")
    assert (ErrorCode.GTFS_UNSUPPORTED, "fare_leg_rules.txt", 1) in _codes(exc)
    assert "2 leg rules match" in str(exc.value)


def test_pay_the_difference_transfer_is_refused(feed: Path, tmp_path: Path) -> None:
    """A transfer that charges a positive upgrade product (TransLink's AddFare) is refused."""
    write(feed, "fare_products.txt", "fare_product_id,amount,currency\na,2,CNY\nup,1.40,CNY")
    write(feed, "fare_leg_rules.txt", "leg_group_id,fare_product_id\ng,a")
    write(feed, "fare_transfer_rules.txt",
          "from_leg_group_id,to_leg_group_id,duration_limit,duration_limit_type,"
          "fare_transfer_type,fare_product_id\ng,g,5400,1,1,up")
    with pytest.raises(GtfsError) as exc:
        import_feed(feed, tmp_path / "out")
    assert _codes(exc) == {(ErrorCode.GTFS_UNSUPPORTED, "fare_transfer_rules.txt", 1)}


def test_flat_lines_need_the_whole_area(feed: Path, tmp_path: Path) -> None:
    """Only Wuhan's buses priced: the import refuses an area with unpriced flat lines."""
    reg = load_tariff_set().registry
    buses = [f"{ln.operator}-{ln.line}" for ln in reg.lines.values()
             if ln.operator == WUHAN_BUS and ln.network == FLAT]
    write(feed, "routes.txt", "route_id,agency_id,route_short_name,route_type\n" + "\n".join(
        f"{r},101,{r},3" for r in buses[1:]))
    write(feed, "fare_products.txt", "fare_product_id,amount,currency\na,2,CNY")
    write(feed, "fare_leg_rules.txt", "fare_product_id\na")
    with pytest.raises(GtfsError) as exc:
        import_feed(feed, tmp_path / "out")
    assert ErrorCode.TARIFF_UNPRICED_LINE in str(exc.value)


@given(st.lists(st.integers(0, 3000), min_size=1, max_size=8),
       st.one_of(st.builds(lambda b: ("rate", b), st.integers(0, 10_000)),
                 st.builds(lambda f: ("fixed", f), st.integers(0, 3000))))
def test_fit_price_reproduces_every_amount(bases: list[int], price: tuple[str, int]) -> None:
    kind, x = price
    pairs = [(b, apply_rate(b, x) if kind == "rate" else min(b, x)) for b in bases]
    fitted = fit_price(pairs)
    assert fitted is not None
    for base, amount in pairs:
        got = (apply_rate(base, fitted["rate_bp"]) if fitted["rate_bp"] is not None
               else min(base, fitted["fixed_fen"] or 0))
        assert got == amount


def test_fit_price_refuses_amounts_above_the_base() -> None:
    assert fit_price([(200, 250)]) is None
    assert fit_price([(200, 100), (400, 150)]) is None  # neither one rate nor one fixed fare
    assert fit_price([(200, 100), (400, 100)]) == {"rate_bp": None, "fixed_fen": 100}
    assert fit_price([(200, 100), (400, 200)]) == {"rate_bp": 5000, "fixed_fen": None}


def test_cli_import(feed: Path, tmp_path: Path) -> None:
    write(feed, "fare_products.txt", "fare_product_id,amount,currency\na,2,CNY")
    write(feed, "fare_leg_rules.txt", "fare_product_id\na")
    runner = CliRunner()
    ok = runner.invoke(app, ["import-gtfs", str(feed), "--out", str(tmp_path / "out")])
    assert ok.exit_code == 0, ok.output
    assert "420100-gtfs.toml" in ok.output and "note:" in ok.output
    write(feed, "fare_products.txt", "fare_product_id,amount,currency\na,2.001,CNY")
    bad = runner.invoke(app, ["import-gtfs", str(feed), "--out", str(tmp_path / "out2")])
    assert bad.exit_code == EXIT_BAD_ARGUMENT
    assert "fare_products.txt: row 1: amount:" in bad.output
    assert "[GTFS_BAD_AMOUNT]" in bad.output
    missing = runner.invoke(app, ["import-gtfs", str(tmp_path / "nowhere"), "--out",
                                  str(tmp_path / "out3")])
    assert missing.exit_code == EXIT_BAD_ARGUMENT



@pytest.mark.parametrize(("count", "limit", "code"), [
    ("x", "5400", ErrorCode.GTFS_BAD_ROW),  # not an integer
    ("0", "5400", ErrorCode.GTFS_BAD_ROW),  # the reference allows -1 or a positive count
    ("1", "90000", ErrorCode.GTFS_UNSUPPORTED),  # 1500 minutes: beyond a service day's 24 h
    ("1", "5430", ErrorCode.GTFS_UNSUPPORTED),  # not whole minutes
])
def test_bad_transfer_rows(feed: Path, tmp_path: Path, count: str, limit: str,
                           code: str) -> None:
    write(feed, "fare_products.txt", "fare_product_id,amount,currency\na,2,CNY")
    write(feed, "fare_leg_rules.txt", "leg_group_id,fare_product_id\ng,a")
    write(feed, "fare_transfer_rules.txt",
          "from_leg_group_id,to_leg_group_id,transfer_count,duration_limit,duration_limit_type,"
          f"fare_transfer_type\ng,g,{count},{limit},1,0")
    with pytest.raises(GtfsError) as exc:
        import_feed(feed, tmp_path / "out")
    assert code in {c for c, _, _ in _codes(exc)}
