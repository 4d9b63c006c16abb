"""GTFS-Fares v2 export: a valid feed on its own, the fares Tongka clears, nothing dropped.

The structural check follows the GTFS Schedule reference (gtfs.org/documentation/schedule/
reference): required files and fields, every referenced id exists, and exactly one leg rule
matches each leg a card can make. Counts come from the registry, never hard-coded, so the
check holds while the Wuhan Metro data grows.
"""

from __future__ import annotations

import csv
import datetime as dt
import re
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from tariffs.cli import EXIT_BAD_ARGUMENT, app
from tariffs.fares import apply_rate, base_fare_flat, product_fare
from tariffs.gtfs import (
    CASH_MEDIUM,
    NOTES_FILE,
    ExportResult,
    export,
    fen_to_yuan,
    network_bases,
    route_id,
    yuan_to_fen,
)
from tariffs.load import TariffSet, load_tariff_set
from tariffs.model import TransferRule
from tariffs.registry import FLAT
from tariffs.vocab import Mode, Product

DAY = dt.date(2024, 3, 1)  # after every default version's first day

# GTFS reference: the fields each file must have (conditionally required ones that apply here).
REQUIRED: dict[str, tuple[str, ...]] = {
    "agency.txt": ("agency_id", "agency_name", "agency_url", "agency_timezone"),
    "routes.txt": ("route_id", "agency_id", "route_short_name", "route_type"),
    "stops.txt": ("stop_id", "stop_name"),
    "feed_info.txt": ("feed_publisher_name", "feed_publisher_url", "feed_lang"),
    "fare_media.txt": ("fare_media_id", "fare_media_type"),
    "rider_categories.txt": ("rider_category_id", "rider_category_name",
                             "is_default_fare_category"),
    "fare_products.txt": ("fare_product_id", "amount", "currency"),
    "networks.txt": ("network_id",),
    "route_networks.txt": ("network_id", "route_id"),
    "areas.txt": ("area_id",),
    "stop_areas.txt": ("area_id", "stop_id"),
    "fare_leg_rules.txt": ("fare_product_id",),
    "fare_transfer_rules.txt": ("fare_transfer_type",),
}
NOT_EMPTY = {"agency_name", "agency_url", "agency_timezone", "route_id", "route_type", "stop_id",
             "fare_media_id", "fare_media_type", "fare_product_id", "amount", "currency",
             "network_id", "area_id", "rider_category_id", "fare_transfer_type"}


def read(directory: Path, name: str) -> list[dict[str, str]]:
    with open(directory / name, encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ExportResult, TariffSet]:
    ts = load_tariff_set()
    out = tmp_path_factory.mktemp("feed")
    return out, export(ts, DAY, out), ts


def test_required_files_and_fields(exported: tuple[Path, ExportResult, TariffSet]) -> None:
    out, result, _ = exported
    assert {p.name for p in result.files} >= set(REQUIRED) | {NOTES_FILE}
    for name, fields in REQUIRED.items():
        with open(out / name, encoding="utf-8", newline="") as fh:
            reader = csv.DictReader(fh)
            assert set(fields) <= set(reader.fieldnames or []), name
            for row in reader:
                for f in fields:
                    assert f not in NOT_EMPTY or row[f], (name, f, row)
    assert [r["is_default_fare_category"] for r in read(out, "rider_categories.txt")].count(
        "1") == 1


def test_referenced_ids_exist(exported: tuple[Path, ExportResult, TariffSet]) -> None:
    out, _, ts = exported
    ids = {name: {r[key] for r in read(out, name)} for name, key in (
        ("agency.txt", "agency_id"), ("routes.txt", "route_id"), ("stops.txt", "stop_id"),
        ("networks.txt", "network_id"), ("areas.txt", "area_id"),
        ("fare_media.txt", "fare_media_id"), ("rider_categories.txt", "rider_category_id"),
        ("fare_products.txt", "fare_product_id"))}
    assert {r["agency_id"] for r in read(out, "routes.txt")} <= ids["agency.txt"]
    route_nets = read(out, "route_networks.txt")
    assert {r["route_id"] for r in route_nets} <= ids["routes.txt"]
    assert {r["network_id"] for r in route_nets} <= ids["networks.txt"]
    # A route is in at most one network (route_id is the file's primary key).
    assert max(Counter(r["route_id"] for r in route_nets).values()) == 1
    for r in read(out, "stop_areas.txt"):
        assert r["area_id"] in ids["areas.txt"] and r["stop_id"] in ids["stops.txt"]
    for r in read(out, "fare_products.txt"):
        assert r["fare_media_id"] in ids["fare_media.txt"] | {""}
        assert r["rider_category_id"] in ids["rider_categories.txt"] | {""}
        assert r["currency"] == "CNY" and re.fullmatch(r"-?\d+\.\d\d", r["amount"])
    rules = read(out, "fare_leg_rules.txt")
    groups = {r["leg_group_id"] for r in rules}
    for r in rules:
        assert r["fare_product_id"] in ids["fare_products.txt"]
        assert r["network_id"] in ids["networks.txt"]
        assert {r["from_area_id"], r["to_area_id"]} <= ids["areas.txt"] | {""}
    for r in read(out, "fare_transfer_rules.txt"):
        assert {r["from_leg_group_id"], r["to_leg_group_id"]} <= groups
        assert r["fare_product_id"] in ids["fare_products.txt"] | {""}
        # GTFS reference: transfer_count only when from and to leg groups are the same.
        assert not r["transfer_count"] or r["from_leg_group_id"] == r["to_leg_group_id"]
    # Registry ids: every line of the circle is a route, every stop of a line a stop.
    reg = ts.registry
    assert ids["routes.txt"] == {route_id(ln) for ln in reg.lines.values()}
    assert ids["stops.txt"] == {str(s) for ln in reg.lines.values() for s in ln.stops}


def test_one_fare_per_leg_rule_match(exported: tuple[Path, ExportResult, TariffSet]) -> None:
    """Every leg a card can make matches exactly one leg rule (no rule_priority is used)."""
    out, _, ts = exported
    reg = ts.registry
    net_of = {r["route_id"]: r["network_id"] for r in read(out, "route_networks.txt")}
    area_of = {r["stop_id"]: r["area_id"] for r in read(out, "stop_areas.txt")}
    rules = Counter((r["network_id"], r["from_area_id"], r["to_area_id"])
                    for r in read(out, "fare_leg_rules.txt"))
    assert max(rules.values()) == 1
    for ln in reg.lines.values():
        net = net_of[route_id(ln)]
        if ln.network == FLAT:
            assert rules[(net, "", "")] == 1, ln
            assert not any(k[0] == net and (k[1] or k[2]) for k in rules)
        else:
            for a in ln.stops:
                for b in ln.stops:
                    assert rules[(net, area_of[str(a)], area_of[str(b)])] == 1


def test_amounts_are_the_fares_tongka_clears(
        exported: tuple[Path, ExportResult, TariffSet]) -> None:
    """Cash amount = SPEC §6.1 base fare; card amounts = SPEC §6.3 product fare of own cards."""
    out, _, ts = exported
    reg = ts.registry
    amounts = {(r["fare_product_id"], r["rider_category_id"], r["fare_media_id"]):
               yuan_to_fen(r["amount"]) for r in read(out, "fare_products.txt")}
    product_of = {(r["network_id"], r["from_area_id"], r["to_area_id"]): r["fare_product_id"]
                  for r in read(out, "fare_leg_rules.txt")}
    net_of = {r["route_id"]: r["network_id"] for r in read(out, "route_networks.txt")}
    checked = 0
    for area in sorted(ts.tariffs):
        version = ts.version_for(area, DAY)
        own = reg.own_issuers(area)[0]
        legs: list[tuple[int, str, str, str, int]] = []  # (mode, network, from, to, base)
        for ln in reg.lines.values():
            if reg.line_area(ln.operator, ln.line) != area or ln.network != FLAT:
                continue
            legs.append((ln.mode, net_of[route_id(ln)], "", "",
                         base_fare_flat(version, reg, ln.operator, ln.line)))
        for nf in version.networks:
            mode = reg.lines[reg.networks[nf.network].lines[0]].mode
            bases = network_bases(nf, reg)
            stops = reg.networks[nf.network].stops
            for a, b in {(stops[0], stops[-1]), (stops[-1], stops[0]), (stops[0], stops[0])}:
                legs.append((mode, f"net-{nf.network}", f"stop-{a}", f"stop-{b}", bases[(a, b)]))
        for mode, net, a, b, base in legs:
            pid = product_of[(net, a, b)]
            assert amounts[(pid, "ordinary", CASH_MEDIUM)] == base
            for product in Product:
                _, fare = product_fare(version, own, int(product), int(mode), base)
                for medium in ("card", "qr_code", "social_security"):
                    assert amounts[(pid, product.name.lower(), medium)] == fare
                    checked += 1
    assert checked > 0


def test_wuhan_bus_worked_example(exported: tuple[Path, ExportResult, TariffSet]) -> None:
    """SPEC §6.3: Wuhan Tong on Wuhan buses pays 2000 bp off: cash 2.00 yuan, card 1.60."""
    out, _, ts = exported
    version = ts.version_for(420100, DAY)
    rate = next(p.rate_bp for p in version.prices if (p.mode, p.product) == ("bus", "ordinary"))
    assert rate == 2000 and apply_rate(200, rate) == 160
    rows = {(r["rider_category_id"], r["fare_media_id"]): r["amount"]
            for r in read(out, "fare_products.txt") if r["fare_product_id"] == "420100-bus-200"}
    assert rows[("ordinary", CASH_MEDIUM)] == "2.00"
    assert rows[("ordinary", "card")] == rows[("ordinary", "nfc_phone")] == "1.60"


def test_what_fares_v2_cannot_say_is_listed(
        exported: tuple[Path, ExportResult, TariffSet]) -> None:
    out, result, ts = exported
    text = (out / NOTES_FILE).read_text(encoding="utf-8")
    for note in result.not_expressible:
        assert f"- {note}\n" in text
    for area in sorted(ts.tariffs):
        version = ts.version_for(area, DAY)
        mine = [n for n in result.not_expressible if n.startswith(f"area {area} ")]
        for cap in version.caps:
            assert any(f"daily cap {cap.product} {fen_to_yuan(cap.cap_fen)}" in n for n in mine)
        for rebate in version.rebates:
            assert any(f"monthly rebate on network {rebate.network}" in n for n in mine)
        kinds = {s.kind for s in version.transfer.steps} if version.transfer else set()
        if "difference" in kinds:
            assert any("difference" in n and "not exported" in n for n in mine)
        if sorted(version.accepted_issuers) != sorted(ts.registry.issuers):
            assert any("per-issuer acceptance" in n for n in mine)


def test_a_transfer_rule_that_fits_is_exported(tmp_path: Path) -> None:
    """Huangshi's version with a free bus-bus transfer in 60 minutes from the previous tap."""
    ts = load_tariff_set()
    tariff = ts.tariffs[420200]
    v = tariff.versions[-1].model_copy(update={"transfer": TransferRule.model_validate({
        "window_minutes": 60, "window_from": "previous_last_tap",
        "allowed_modes": [["bus", "bus"]], "steps": [{"kind": "off_fen", "fen": 50}] * 2})})
    tariffs = dict(ts.tariffs)
    tariffs[420200] = tariff.model_copy(update={"versions": [*tariff.versions[:-1], v]})
    export(TariffSet(ts.registry, tariffs, ts.contracts), DAY, tmp_path)
    rows = [r for r in read(tmp_path, "fare_transfer_rules.txt")
            if r["from_leg_group_id"].startswith("420200-")]
    assert rows == [{"from_leg_group_id": "420200-bus", "to_leg_group_id": "420200-bus",
                     "transfer_count": "2", "duration_limit": "3600", "duration_limit_type": "2",
                     "fare_transfer_type": "1", "fare_product_id": "420200-transfer-off-50"}]
    discount = [r for r in read(tmp_path, "fare_products.txt")
                if r["fare_product_id"] == "420200-transfer-off-50"]
    assert [r["amount"] for r in discount] == ["-0.50"]


@given(st.integers(-10**9, 10**9))
def test_yuan_strings_round_trip_exactly(fen: int) -> None:
    text = fen_to_yuan(fen)
    assert re.fullmatch(r"-?\d+\.\d\d", text)
    assert yuan_to_fen(text) == fen


@pytest.mark.parametrize(("text", "fen"), [("2.75", 275), ("2.5", 250), ("3", 300),
                                           ("-0.50", -50), ("0.01", 1), (" 12.00 ", 1200)])
def test_yuan_to_fen(text: str, fen: int) -> None:
    assert yuan_to_fen(text) == fen


@pytest.mark.parametrize("text", ["2.755", "1e2", "1.2.3", "", "abc", "2,50", ".5", "NaN"])
def test_yuan_to_fen_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        yuan_to_fen(text)


def test_cli_export_prints_files_and_notes(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["export-gtfs", "--date", "2024-03-01",
                                      "--out", str(tmp_path / "feed")])
    assert result.exit_code == 0, result.output
    assert "fare_leg_rules.txt" in result.output
    assert "not expressible in GTFS-Fares v2" in result.output
    assert "daily cap" in result.output
    assert (tmp_path / "feed" / NOTES_FILE).is_file()


def test_cli_export_bad_tariffs(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["export-gtfs", "--date", "2024-03-01", "--out",
                                      str(tmp_path), "--tariffs", str(tmp_path / "nowhere")])
    assert result.exit_code == EXIT_BAD_ARGUMENT


def test_mode_route_types() -> None:
    """routes.txt route_type: bus 3, subway/metro 1, ferry 4 (GTFS reference)."""
    from tariffs.gtfs import ROUTE_TYPES
    assert ROUTE_TYPES[Mode.METRO] == 1 and ROUTE_TYPES[Mode.FERRY] == 4
