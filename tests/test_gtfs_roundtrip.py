"""Export -> import prices every leg as the original does, within what Fares v2 can say.

The expressible subset (docs/tariffs.md, "GTFS-Fares v2"): every issuer accepted and every
card's concession honoured, no daily caps, no monthly rebates, later-leg apportionment, and a
transfer rule whose steps are all alike and free or a fixed amount off, counted over one
transfer when its window runs from the chain's first boarding or when it allows pairs of
different modes. Tariff sets are drawn by ``tongka.testing.strategies.tariff_sets`` and projected
onto that subset; days are drawn against the projected set.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clearing.day import price_taps
from tariffs.gtfs import EXT_MAX_FARE, export, import_feed, not_expressible
from tariffs.load import TariffSet, load_tariff_file
from tariffs.model import Funders, Tariff, TariffVersion, TransferRule
from tongka.testing.strategies import days, service_days, tariff_sets

# What a leg's price is made of; "version" (a day number) and "apportionment" name the tariff
# version, which the import dates from the exported day.
PRICE_COLUMNS = ("card_id", "issuer", "board_ts_ms", "status", "honoured_product", "chain",
                 "transfer_no", "base_fen", "product_fare_fen", "transfer_fare_fen",
                 "computed_fen", "card_discount_fen", "transfer_discount_fen",
                 "cap_discount_fen", "charged_fen", "mismatch_fen")


def expressible(ts: TariffSet) -> TariffSet:
    """The tariff set cut down to what Fares v2 can say (see the module docstring)."""
    everyone = sorted(ts.registry.issuers)
    out = {}
    for area, tariff in ts.tariffs.items():
        versions = [_version(v, everyone) for v in tariff.versions]
        out[area] = tariff.model_copy(update={"versions": versions})
    return TariffSet(ts.registry, out, ts.contracts)


def _version(v: TariffVersion, everyone: list[int]) -> TariffVersion:
    transfer = v.transfer
    if transfer is not None:
        kept = [s for s in transfer.steps if s.kind in ("free", "off_fen")][:1]
        step = kept[0].model_dump() if kept else {"kind": "free"}
        many = transfer.window_from == "previous_last_tap" and all(
            a == b for a, b in transfer.allowed_modes)
        transfer = TransferRule.model_validate({
            **transfer.model_dump(), "steps": [step] * (len(transfer.steps) if many else 1)})
    data: dict[str, Any] = {
        **v.model_dump(), "accepted_issuers": everyone, "concession_issuers": everyone,
        "visitor_rate_bp": 0, "caps": [], "rebates": [], "apportionment": "later_leg",
        "funders": Funders().model_dump(),
        "transfer": transfer.model_dump() if transfer is not None else None}
    return TariffVersion.model_validate(data)


@st.composite
def sets_and_days(draw: st.DrawFn) -> tuple[TariffSet, dt.date, pa.Table]:
    ts = expressible(draw(tariff_sets()))
    day = draw(service_days(ts))
    return ts, day, draw(days(ts, day, max_cards=5, straddle=False))


def _round_trip(ts: TariffSet, day: dt.date) -> TariffSet:
    with TemporaryDirectory() as tmp:
        export(ts, day, Path(tmp) / "feed")
        result = import_feed(Path(tmp) / "feed", Path(tmp) / "out", registry=ts.registry)
    return TariffSet(ts.registry, result.tariffs, ts.contracts)


def _prices(legs: pa.Table) -> list[tuple]:
    rows = legs.select(list(PRICE_COLUMNS)).to_pylist()
    return sorted(tuple(r.values()) for r in rows)


@settings(max_examples=8, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(sets_and_days())
def test_round_trip_prices_days_alike(case: tuple[TariffSet, dt.date, pa.Table]) -> None:
    ts, day, taps = case
    back = _round_trip(ts, day)
    for area in ts.tariffs:
        # Within the subset only the penalty rules (carried in extension columns) are noted.
        assert all(EXT_MAX_FARE in n for n in not_expressible(
            ts.version_for(area, day), area, ts.registry))
    for reference in (True, False):
        original = price_taps(taps, ts, reference=reference)
        imported = price_taps(taps, back, reference=reference)
        assert _prices(imported) == _prices(original)


def test_written_files_load_back_equal(tmp_path: Path) -> None:
    """The TOML files the import writes are read by the loader into the same models."""
    ts = expressible(_default())
    day = dt.date(2024, 3, 1)
    export(ts, day, tmp_path / "feed")
    result = import_feed(tmp_path / "feed", tmp_path / "out", registry=ts.registry)
    assert {p.name for p in result.files} == {f"{a}-gtfs.toml" for a in ts.tariffs}
    for path in result.files:
        loaded: Tariff = load_tariff_file(path, ts.registry)
        assert loaded == result.tariffs[loaded.area]
        assert loaded.versions[0].valid_from == day


def test_default_set_round_trip_on_a_fixed_day() -> None:
    """The built-in tariffs, cut to the subset, price a drawn day alike after the round trip."""
    ts = expressible(_default())
    day = dt.date(2024, 3, 1)
    back = _round_trip(ts, day)

    @settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(days(ts, day, max_cards=6, straddle=False))
    def check(taps: pa.Table) -> None:
        for reference in (True, False):
            assert _prices(price_taps(taps, back, reference=reference)) == _prices(
                price_taps(taps, ts, reference=reference))

    check()


def _default() -> TariffSet:
    from tariffs.load import load_tariff_set
    return load_tariff_set()
