"""The QA strategies draw what they promise: valid, accepted, de-duplicated taps (SPEC §3-§4).

A property test is only as good as its inputs: if ``tongka.testing.strategies`` drew a stop that is
not on its line, or two taps under one duplicate key, every invariant test built on it would
be testing something the engine never sees.
"""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clearing.accept import check_taps
from clearing.service_day import day_bounds_ms, day_from_number, service_day_number
from clearing.taps import ACCOUNT_BASED, TAP_SCHEMA, TapType
from tariffs.load import TariffSet, load_tariff_set
from tariffs.registry import FLAT
from tariffs.validate import check_tariff
from tariffs.vocab import Media, Product
from tongka.testing.strategies import (
    VERSION_EDGE,
    batches,
    card_days,
    days,
    taps,
    tariff_sets,
    tariffs_and_days,
)

# Big generated days are the point: do not fail a run because one is slow or large to draw.
SLOW_OK = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example]
QA = settings(max_examples=150, deadline=None, suppress_health_check=SLOW_OK)


def assert_valid_taps(table: pa.Table, tariffs: TariffSet) -> None:
    """Every SPEC §4 acceptance check, and no two taps under one duplicate key."""
    reg = tariffs.registry
    assert table.schema.equals(TAP_SCHEMA)
    device_keys: set[tuple[int, int, int]] = set()
    card_keys: set[tuple[int, int, int]] = set()
    for row in table.to_pylist():
        key = (row["operator"], row["line"])
        assert row["operator"] in reg.operators and key in reg.lines, row
        assert row["issuer"] in reg.issuers, row
        line = reg.lines[key]
        Product(row["product"])
        Media(row["media"])
        if row["stop"] == 0:
            assert line.network == FLAT, row  # stop 0 only on flat lines
            assert row["city"] == reg.operators[row["operator"]].city, row
        else:
            assert row["stop"] in line.stops, row
            assert row["city"] == reg.stops[row["stop"]].city, row
        if line.network == FLAT:
            assert row["tap_type"] == TapType.FLAT, row
        else:
            assert row["tap_type"] in (TapType.ENTRY, TapType.EXIT), row
        assert row["debited_fen"] >= 0 or row["debited_fen"] == ACCOUNT_BASED, row
        day = service_day_number(row["ts_ms"])
        area = reg.line_area(*key)
        tariffs.version_for(area, dt.date(1970, 1, 1) + dt.timedelta(days=int(day)))
        dk = (row["operator"], row["device_id"], row["device_seq"])
        ck = (row["issuer"], row["card_id"], row["card_seq"])
        assert dk not in device_keys and ck not in card_keys, row
        device_keys.add(dk)
        card_keys.add(ck)


@QA
@given(card_days())
def test_card_days_are_one_card_on_one_service_day(table: pa.Table) -> None:
    assert_valid_taps(table, load_tariff_set())
    assert table.num_rows >= 1
    assert len(set(zip(table["issuer"].to_pylist(), table["card_id"].to_pylist(),
                       strict=True))) == 1
    assert len(set(service_day_number(t) for t in table["ts_ms"].to_pylist())) == 1


@QA
@given(tariffs_and_days())
def test_days_are_valid_against_their_tariff_set(drawn: tuple[TariffSet, pa.Table]) -> None:
    tariffs, table = drawn
    assert_valid_taps(table, tariffs)


@QA
@given(tariffs_and_days())
def test_the_engines_own_acceptance_checks_accept_every_drawn_tap(
        drawn: tuple[TariffSet, pa.Table]) -> None:
    """clearing.accept (SPEC §4) agrees, service day by service day."""
    tariffs, table = drawn
    day_of = service_day_number(table["ts_ms"].to_numpy())
    for day in sorted(set(day_of.tolist())):
        part = table.filter(pa.array(day_of == day))
        accepted, errors = check_taps(part, tariffs.registry, day_from_number(day), tariffs=tariffs)
        assert accepted.all() and errors == [], errors[:3]


@QA
@given(days(straddle=True, day=VERSION_EDGE - dt.timedelta(days=1)))
def test_straddling_days_stay_within_two_service_days(table: pa.Table) -> None:
    start, _ = day_bounds_ms(VERSION_EDGE - dt.timedelta(days=1))
    _, end = day_bounds_ms(VERSION_EDGE)
    assert all(start <= t < end for t in table["ts_ms"].to_pylist())


@QA
@given(tariff_sets())
def test_tariff_sets_pass_the_load_checks(tariffs: TariffSet) -> None:
    for area, tariff in tariffs.tariffs.items():
        assert check_tariff(f"{area}.toml", tariff, tariffs.registry) == []
        for v in tariff.versions:
            assert set(tariffs.registry.own_issuers(area)) <= set(v.concession_issuers)


@QA
@given(st.data())
def test_batches_hold_every_row_once(data: st.DataObject) -> None:
    table = data.draw(days(max_cards=3))
    parts = data.draw(batches(table))
    joined = pa.concat_tables(parts)
    key = ["operator", "device_id", "device_seq"]
    assert joined.sort_by([(k, "ascending") for k in key]).equals(
        table.sort_by([(k, "ascending") for k in key]))


@QA
@given(taps())
def test_a_single_tap_is_a_valid_record(tap: dict) -> None:
    assert_valid_taps(pa.Table.from_pylist([tap], schema=TAP_SCHEMA), load_tariff_set())
